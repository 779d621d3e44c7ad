//! `HttpAgentHub`: the core `AgentHub` trait over the hub's HTTP API (reqwest, rustls).
//!
//! A question has the configured ask timeout; every other call a shorter one. Failures are sorted the way the orchestrator answers
//! them: could not reach or too slow → `Unavailable`; answered with an error or an unreadable
//! body → `Failed`; the hub's own codes for unknown topics and sessions keep their meaning.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::FeatureId;
use orchestrator_core::hub::{
    AgentHub, Escalation, EscalationId, HubAnswer, HubError, HubHealth, HubQuestion, HubSessionId,
    HumanResponse,
};
use orchestrator_core::values::scrub_text;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire;
use crate::metrics::Metrics;

/// The `agent_id` the orchestrator opens sessions as.
pub const AGENT_ID: &str = "orchestrator";

/// How long a connection to the hub is kept idle for the next call: shorter than the hub's
/// own keep-alive (its Python server, uvicorn, closes an idle connection after 5 s), so that a
/// call does not go out on a connection the hub is closing — failed unanswered, it would be a
/// 503 with the hub well.
const IDLE_CONNECTION: Duration = Duration::from_secs(3);

/// The Agent Hub at a base URL.
#[derive(Debug, Clone)]
pub struct HttpAgentHub {
    http: reqwest::Client,
    base_url: String,
    metrics: Arc<Metrics>,
    ask_timeout: Duration,
    call_timeout: Duration,
}

impl HttpAgentHub {
    /// A client of the hub at `base_url`: a question gives up after `ask_timeout`, every
    /// other call after `call_timeout`.
    pub fn new(
        base_url: &str,
        ask_timeout: Duration,
        call_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, HubError> {
        let mut http = reqwest::Client::builder();
        if on_this_machine(base_url) {
            http = http.no_proxy();
        }
        let http = http
            .timeout(call_timeout)
            .connect_timeout(call_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(IDLE_CONNECTION)
            // The hub's contract has no redirects: a 301 or 302 would turn an ask into a GET
            // elsewhere. Answered as the hub's error instead.
            .redirect(reqwest::redirect::Policy::none())
            // One lookup of the hub's name at a time, its answer kept a while: a lookup holds
            // a blocking thread, which SQLite reads share, until the system's resolver answers
            // (seconds, when a name server drops queries), whatever the call's timeout.
            .dns_resolver(Arc::new(crate::dns::Resolver::new(
                false,
                crate::dns::Lookups::new(crate::dns::HUB_LOOKUPS),
            )))
            .build()
            .map_err(|e| HubError::Unavailable(format!("cannot build the http client: {e}")))?;
        Ok(HttpAgentHub {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            metrics,
            ask_timeout,
            call_timeout,
        })
    }

    /// One call other than a question: send, read, decode, and count the outcome.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<T, HubError> {
        self.call_checked(
            self.bound(MAX_ANSWER_BYTES),
            operation,
            method,
            path,
            body,
            Ok,
        )
        .await
    }

    /// [`HttpAgentHub::call`] answered with an escalation, read up to
    /// [`MAX_ESCALATION_BYTES`].
    async fn call_escalation(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<Escalation, HubError> {
        let bound = self.bound(MAX_ESCALATION_BYTES);
        let escalation: wire::Escalation = self
            .call_checked(bound, operation, method, path, body, Ok)
            .await?;
        Ok(escalation.into())
    }

    /// A call other than a question, reading up to `bytes` of its answer.
    fn bound(&self, bytes: usize) -> Bound {
        Bound {
            time: self.call_timeout,
            bytes,
        }
    }

    /// [`HttpAgentHub::call`] within `bound` (a question's, or another call's), with `check`
    /// turning what was read into the answer (or an error) before the outcome is counted: an
    /// answer read but unusable counts as `error`. A call given up by its caller (a deadline,
    /// a client gone) counts as `unavailable`.
    async fn call_checked<T: DeserializeOwned, U>(
        &self,
        bound: Bound,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        check: impl FnOnce(T) -> Result<U, HubError>,
    ) -> Result<U, HubError> {
        let mut counted = Counted {
            metrics: &self.metrics,
            operation,
            outcome: "unavailable",
        };
        let result = self
            .exchange(method, path, body, bound)
            .await
            .and_then(check);
        counted.outcome = match &result {
            Ok(_) => "ok",
            Err(HubError::Unavailable(_)) => "unavailable",
            Err(HubError::Failed(_)) => "error",
            Err(_) => "refused",
        };
        result
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        bound: Bound,
    ) -> Result<T, HubError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .timeout(bound.time);
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = read_bounded(&mut response, bound.bytes).await?;
        if status.is_success() {
            // An empty success (a 204, say) reads as JSON null.
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            serde_json::from_slice(bytes).map_err(|e| {
                // serde's words may quote the hub's (an unknown variant).
                HubError::Failed(format!(
                    "unreadable {status} answer: {}",
                    hub_words(&e.to_string())
                ))
            })
        } else {
            Err(refusal(status, &bytes))
        }
    }
}

/// An answer as the hub sent it, checked: a `pending_human` one names its escalation, by an
/// id that can be looked up (nothing is stored of an answer whose escalation never could be),
/// and the confidence is a percentage. Only a `needs_reroute` one (no expert answered: ask
/// again) may leave out its answer and confidence (then empty and 0). Its text is scrubbed of
/// control characters.
fn answer_of(answer: wire::Answer) -> Result<HubAnswer, HubError> {
    use orchestrator_core::hub::AnswerStatus;
    let reroute = answer.status == AnswerStatus::NeedsReroute;
    let (text, percent) = match (answer.answer, answer.confidence) {
        (Some(text), Some(percent)) => (text, percent),
        (text, percent) if reroute => (text.unwrap_or_default(), percent.unwrap_or_default()),
        (None, _) => {
            return Err(HubError::Failed(
                "an answer without its answer text".to_owned(),
            ));
        }
        (_, None) => {
            return Err(HubError::Failed(
                "an answer without its confidence".to_owned(),
            ));
        }
    };
    // Its UUID is looked up and answered by path later, where the hub refuses anything else
    // (400 `INVALID_UUID`): taken now, such an id would fail every approval at the gate. Only
    // the hyphenated form goes into a path (not `{…}` or `urn:uuid:…`, which parse too).
    if let Some(id) = &answer.escalation_id {
        let hyphenated = id.len() == 36 && uuid::Uuid::try_parse(id).is_ok();
        if !hyphenated {
            return Err(HubError::Failed(format!(
                "an escalation id that is not a hyphenated UUID: '{}'",
                hub_words(id)
            )));
        }
    }
    let escalation_id = answer.escalation_id.map(EscalationId);
    if answer.status == AnswerStatus::PendingHuman && escalation_id.is_none() {
        return Err(HubError::Failed(
            "pending_human answer without an escalation_id".to_owned(),
        ));
    }
    Ok(HubAnswer {
        answer: scrub_text(text),
        rationale: answer.rationale.map(scrub_text),
        confidence: confidence(percent)?,
        uncertainty_reasons: answer
            .uncertainty_reasons
            .unwrap_or_default()
            .into_iter()
            .map(scrub_text)
            .collect(),
        status: answer.status,
        escalation_id,
    })
}

/// Counts a call's outcome when it ends, however it ends (dropped: as set so far).
struct Counted<'a> {
    metrics: &'a Metrics,
    operation: &'static str,
    outcome: &'static str,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.metrics.hub_call(self.operation, self.outcome);
    }
}

/// The most of an answer's body read: an expert's answer is text of a few kilobytes, and
/// what is read is stored and sent on with every event about it (and so in every page of
/// events and webhook delivery that carries one): a quarter of a MiB bounds what a faulty
/// hub makes each of those weigh.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The most of an escalation's body read: it carries the expert's answer (up to
/// [`MAX_ANSWER_BYTES`] when asked) and the question beside it, so an answer the ask took must
/// never make its escalation unreadable (every approval at its gate would then fail).
const MAX_ESCALATION_BYTES: usize = 2 * MAX_ANSWER_BYTES;

/// How long a call may take, and the most of its answer read.
#[derive(Debug, Clone, Copy)]
struct Bound {
    time: Duration,
    bytes: usize,
}

/// The answer's body, refused unread past `limit` bytes (a hub, or a proxy before it, that
/// sends without end must not fill the memory).
async fn read_bounded(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, HubError> {
    let status = response.status();
    let too_large =
        || HubError::Failed(format!("{status}: the answer is larger than {limit} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failure before a whole answer arrived. Its text, which the log keeps, leaves the URL out
/// (a gateway's path may carry a key).
fn transport(error: reqwest::Error) -> HubError {
    let error = error.without_url();
    if error.is_timeout() {
        HubError::Unavailable("the agent hub did not answer in time".to_owned())
    } else if error.is_connect() {
        HubError::Unavailable("the agent hub cannot be reached".to_owned())
    } else if error.is_decode() || error.is_body() {
        // The answer's body ended early (reqwest names that "decode" too): the hub went away
        // mid-answer, as unavailable as one that went away before it.
        HubError::Unavailable(format!("the agent hub's answer was cut off: {error}"))
    } else {
        HubError::Unavailable(format!("request to the agent hub failed: {error}"))
    }
}

/// A non-2xx answer, in any of the hub's three error shapes.
fn refusal(status: StatusCode, body: &[u8]) -> HubError {
    let parsed = serde_json::from_slice::<wire::ErrorShape>(body).ok();
    let Some(error) = parsed.clone().and_then(wire::ErrorShape::into_error) else {
        return match parsed {
            Some(_) => HubError::Failed(format!("{status}: the hub refused the request body")),
            None => {
                let text = String::from_utf8_lossy(&body[..body.len().min(4 * HUB_WORDS)]);
                HubError::Failed(format!("{status}: {}", hub_words(text.trim())))
            }
        };
    };
    let message = match &error.details {
        Some(details) if !details.is_empty() => {
            hub_words(&format!("{} ({})", error.message, details.join("; ")))
        }
        _ => hub_words(&error.message),
    };
    // A code means what the hub says only beside a 4xx: a 5xx is the hub failing, whatever
    // its body names (a lost escalation read from a 500 would open a gate).
    if !status.is_client_error() {
        return HubError::Failed(format!("{status} {}: {message}", hub_words(&error.code)));
    }
    match error.code.as_str() {
        "UNKNOWN_TOPIC" => HubError::UnknownTopic {
            topic: String::new(),
            message,
        },
        "SESSION_UNAVAILABLE" => HubError::SessionUnavailable(message),
        "SESSION_NOT_FOUND" => HubError::SessionNotFound(message),
        "ESCALATION_NOT_FOUND" => HubError::EscalationNotFound(message),
        "ALREADY_RESOLVED" => HubError::AlreadyResolved(message),
        code => HubError::Failed(format!("{status} {}: {message}", hub_words(code))),
    }
}

/// Most characters of the hub's own words kept in an error (and so in a log line).
const HUB_WORDS: usize = 300;

/// The start of the hub's words, enough to say what it was whatever its length, on one line:
/// a control character is written as its escape, so a line break in the hub's text cannot
/// start a log line of its own.
fn hub_words(text: &str) -> String {
    let mut words = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == HUB_WORDS {
            words.push('…');
            break;
        }
        if c.is_control() {
            words.extend(c.escape_default());
        } else {
            words.push(c);
        }
    }
    words
}

fn confidence(value: f64) -> Result<u8, HubError> {
    if (0.0..=100.0).contains(&value) {
        // In range, so the cast cannot truncate.
        Ok(value.round() as u8)
    } else {
        Err(HubError::Failed(format!(
            "confidence {value} is outside 0-100"
        )))
    }
}

/// Escalation ids come from the hub; only URL-safe ones are put into a path.
fn escalation_path(id: &EscalationId) -> Result<String, HubError> {
    hub_path("/escalations/", &id.0)
}

/// `prefix` and an id the hub gave, if the id is URL-safe (ids are UUIDs).
fn hub_path(prefix: &str, id: &str) -> Result<String, HubError> {
    let safe = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if safe {
        Ok(format!("{prefix}{id}"))
    } else {
        Err(HubError::Failed(format!(
            "malformed id '{}' from the hub",
            hub_words(id)
        )))
    }
}

#[async_trait]
impl AgentHub for HttpAgentHub {
    async fn create_session(&self, feature_id: &FeatureId) -> Result<HubSessionId, HubError> {
        let body = wire::CreateSession {
            agent_id: AGENT_ID.to_owned(),
            feature_id: Some(feature_id.to_string()),
        };
        // An id that no path may hold could never be closed (nor, with a NUL, be stored on
        // PostgreSQL): a bad answer, and nothing is stored.
        let session = |session: wire::Session| {
            hub_path("/sessions/", &session.id)?;
            Ok(HubSessionId(session.id))
        };
        self.call_checked(
            self.bound(MAX_ANSWER_BYTES),
            "create_session",
            Method::POST,
            "/sessions",
            Some(&body),
            session,
        )
        .await
    }

    /// Sends the `DELETE` on a task of its own and answers at once: the orchestrator closes a
    /// session beside a question and gives the close up when the answer comes, and a hub slow
    /// to close one holds no answer. The outcome is counted and, when it failed, logged.
    async fn close_session(&self, id: &HubSessionId) -> Result<(), HubError> {
        let path = hub_path("/sessions/", &id.0)?;
        let hub = self.clone();
        let close = async move {
            let closed = hub
                .call::<serde::de::IgnoredAny>("close_session", Method::DELETE, &path, None::<&()>)
                .await;
            if let Err(e) = closed {
                tracing::info!(error = %e, session = %path, "a session made in vain was not closed; the hub expires it");
            }
        };
        // Logged with the request that made the session.
        tokio::spawn(tracing::Instrument::in_current_span(close));
        Ok(())
    }

    async fn ask(&self, question: &HubQuestion) -> Result<HubAnswer, HubError> {
        let body = wire::Ask {
            question: question.question.clone(),
            feature_id: question.feature_id.to_string(),
            context: question.context.clone(),
            session_id: Some(question.session_id.0.clone()),
        };
        let path = format!("/ask/{}", question.topic);
        // A question waits for its expert, which may take minutes; other calls do not.
        let bound = Bound {
            time: self.ask_timeout,
            bytes: MAX_ANSWER_BYTES,
        };
        self.call_checked(bound, "ask", Method::POST, &path, Some(&body), answer_of)
            .await
            .map_err(|e| match e {
                HubError::UnknownTopic { message, .. } => HubError::UnknownTopic {
                    topic: question.topic.to_string(),
                    message,
                },
                other => other,
            })
    }

    async fn escalation(&self, id: &EscalationId) -> Result<Escalation, HubError> {
        let path = escalation_path(id)?;
        self.call_escalation("escalation", Method::GET, &path, None::<&()>)
            .await
    }

    async fn respond(
        &self,
        id: &EscalationId,
        response: &HumanResponse,
    ) -> Result<Escalation, HubError> {
        let path = escalation_path(id)?;
        let body = wire::HumanResponse {
            action: response.action,
            responder: response.responder.clone(),
            response: response.response.clone(),
        };
        self.call_escalation("respond", Method::POST, &path, Some(&body))
            .await
    }

    async fn health(&self) -> Result<HubHealth, HubError> {
        let health: wire::Health = self
            .call("health", Method::GET, "/health", None::<&()>)
            .await?;
        Ok(HubHealth {
            status: health.status,
            version: health.version,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_on_this_machine_is_named_by_loopback_or_localhost() {
        for url in [
            "http://localhost:8001",
            "http://LocalHost:8001/v1",
            "http://hub.localhost",
            "http://127.0.0.1:8001",
            "http://127.1.2.3",
            "http://[::1]:8001",
            "http://localhost.:8001",
            "http://[::ffff:127.0.0.1]:8001",
        ] {
            assert!(on_this_machine(url), "{url}");
        }
        for url in [
            "http://hub.internal:8001",
            "http://10.0.0.5",
            "http://[::2]",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://[::ffff:10.0.0.1]",
            "not a url",
        ] {
            assert!(!on_this_machine(url), "{url}");
        }
    }

    #[test]
    fn each_error_shape_maps_to_its_meaning() {
        let nested =
            br#"{"detail": {"error": {"code": "SESSION_UNAVAILABLE", "message": "expired"}}}"#;
        assert!(matches!(
            refusal(StatusCode::BAD_REQUEST, nested),
            HubError::SessionUnavailable(_)
        ));
        let top = br#"{"error": {"code": "SESSION_NOT_FOUND", "message": "unknown"}}"#;
        assert!(matches!(
            refusal(StatusCode::NOT_FOUND, top),
            HubError::SessionNotFound(_)
        ));
        let topic = br#"{"detail": {"error": {"code": "UNKNOWN_TOPIC", "message": "no expert", "details": ["astrology"]}}}"#;
        assert!(matches!(
            refusal(StatusCode::NOT_FOUND, topic),
            HubError::UnknownTopic { .. }
        ));
        let unprocessable =
            br#"{"detail": [{"type": "missing", "loc": ["body", "question"], "msg": "required"}]}"#;
        assert!(matches!(
            refusal(StatusCode::UNPROCESSABLE_ENTITY, unprocessable),
            HubError::Failed(_)
        ));
        let plain = b"Internal Server Error";
        match refusal(StatusCode::INTERNAL_SERVER_ERROR, plain) {
            HubError::Failed(text) => assert!(text.contains("Internal Server Error")),
            other => panic!("{other:?}"),
        }
        // A code that would open a gate or renew a session means nothing beside a 5xx.
        for code in [
            "ESCALATION_NOT_FOUND",
            "SESSION_NOT_FOUND",
            "SESSION_UNAVAILABLE",
            "ALREADY_RESOLVED",
            "UNKNOWN_TOPIC",
        ] {
            let body =
                format!(r#"{{"detail": {{"error": {{"code": "{code}", "message": "m"}}}}}}"#);
            match refusal(StatusCode::INTERNAL_SERVER_ERROR, body.as_bytes()) {
                HubError::Failed(text) => assert!(text.contains(code), "{text}"),
                other => panic!("{code} beside a 500: {other:?}"),
            }
        }
        let lost = br#"{"detail": {"error": {"code": "ESCALATION_NOT_FOUND", "message": "gone"}}}"#;
        assert!(matches!(
            refusal(StatusCode::NOT_FOUND, lost),
            HubError::EscalationNotFound(_)
        ));
        let agent =
            br#"{"detail": {"error": {"code": "AGENT_UNAVAILABLE", "message": "expert down"}}}"#;
        assert!(matches!(
            refusal(StatusCode::INTERNAL_SERVER_ERROR, agent),
            HubError::Failed(_)
        ));
    }

    /// The hub's words reach the log bounded and on one line, whatever it sends: a line
    /// break in its message cannot forge a log line, and 120 KB of message is not one.
    #[test]
    fn the_hubs_words_are_kept_short_and_on_one_line() {
        let forged = br#"{"detail": {"error": {"code": "AGENT_UNAVAILABLE",
            "message": "down\nFAKE LOG LINE level=ERROR", "details": ["a\rb"]}}}"#;
        match refusal(StatusCode::INTERNAL_SERVER_ERROR, forged) {
            HubError::Failed(text) => {
                assert!(!text.contains(['\n', '\r']), "{text}");
                assert!(text.contains(r"down\nFAKE LOG LINE"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let long = format!(
            r#"{{"error": {{"code": "SESSION_NOT_FOUND", "message": "{}", "details": ["{}"]}}}}"#,
            "m".repeat(120_000),
            "d".repeat(120_000)
        );
        match refusal(StatusCode::NOT_FOUND, long.as_bytes()) {
            HubError::SessionNotFound(text) => {
                assert_eq!(text.chars().count(), HUB_WORDS + 1, "{text}");
                assert!(text.ends_with('…'));
            }
            other => panic!("{other:?}"),
        }
        let plain = "line one\nline two ".repeat(10_000);
        match refusal(StatusCode::BAD_GATEWAY, plain.as_bytes()) {
            HubError::Failed(text) => {
                assert!(!text.contains('\n') && text.chars().count() < 2 * HUB_WORDS);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A client of the hub at `url` that waits 5 s for every call.
    fn hub_at(url: &str) -> HttpAgentHub {
        let five = Duration::from_secs(5);
        HttpAgentHub::new(url, five, five, Arc::default()).unwrap()
    }

    /// A listener that reads one request and leaves its answer to `answer`; its URL.
    async fn serving_one<F, Fut>(answer: F) -> String
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            answer(socket).await;
        });
        format!("http://{address}/")
    }

    /// A listener that answers one request with a 200 whose chunked body is `size` bytes.
    async fn answering(size: usize) -> String {
        use tokio::io::AsyncWriteExt;
        serving_one(move |mut socket| async move {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = vec![b' '; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let part = &chunk[..left.min(chunk.len())];
                let framed = [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
                if socket.write_all(&framed).await.is_err() {
                    return;
                }
                left -= part.len();
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        })
        .await
    }

    #[tokio::test]
    async fn an_answer_is_read_up_to_its_bound_and_refused_past_it() {
        let mut small = reqwest::get(answering(1000).await).await.unwrap();
        assert_eq!(
            read_bounded(&mut small, MAX_ANSWER_BYTES)
                .await
                .unwrap()
                .len(),
            1000
        );
        // Sent without a length, so only reading finds it too large.
        let mut huge = reqwest::get(answering(MAX_ANSWER_BYTES + 1).await)
            .await
            .unwrap();
        match read_bounded(&mut huge, MAX_ANSWER_BYTES).await {
            Err(HubError::Failed(message)) => assert!(message.contains("larger than"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    /// A listener that answers one request with a 200 carrying `body` and its length.
    async fn answering_with(body: String) -> String {
        use tokio::io::AsyncWriteExt;
        serving_one(move |mut socket| async move {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        })
        .await
    }

    /// An answer just under the ask's bound comes back in its escalation beside the question:
    /// the escalation is still read (else every approval at its gate would fail for good), and
    /// a body its length says is too large is refused before it is read.
    #[tokio::test]
    async fn an_escalation_carrying_the_largest_answer_an_ask_takes_is_read() {
        let answer = "a".repeat(MAX_ANSWER_BYTES - 200);
        let question = "q".repeat(10_000);
        let body = format!(
            r#"{{"id": "e-1", "status": "resolved", "question": "{question}",
                "tentative_answer": "{answer}", "confidence": 40, "human_action": "confirm",
                "human_responder": "rita", "created_at": "2026-11-24T10:29:57"}}"#
        );
        assert!(body.len() > MAX_ANSWER_BYTES);
        let url = answering_with(body).await;
        let escalation = hub_at(&url)
            .escalation(&EscalationId("e-1".into()))
            .await
            .unwrap();
        assert_eq!(escalation.tentative_answer.len(), answer.len());

        let over = format!(r#"{{"answer": "{}"}}"#, "a".repeat(MAX_ANSWER_BYTES));
        let url = answering_with(over).await;
        match hub_at(&url).health().await {
            Err(HubError::Failed(message)) => assert!(message.contains("larger than"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hub_gone_mid_answer_is_unavailable_as_one_gone_before_it() {
        use tokio::io::AsyncWriteExt;
        let url = serving_one(|mut socket| async move {
            let half = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        content-length: 200\r\n\r\n{\"id\": \"e-1\", ";
            let _ = socket.write_all(half.as_bytes()).await;
        })
        .await;
        match hub_at(&url).escalation(&EscalationId("e-1".into())).await {
            Err(HubError::Unavailable(message)) => {
                assert!(message.contains("cut off"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_redirect_is_the_hubs_error_not_followed() {
        use tokio::io::AsyncWriteExt;
        let url = serving_one(|mut socket| async move {
            // Followed, it would be a refused connection: 503, not 502.
            let moved = "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/\r\n\
                         content-length: 0\r\n\r\n";
            let _ = socket.write_all(moved.as_bytes()).await;
        })
        .await;
        let hub = hub_at(&url);
        match hub.escalation(&EscalationId("e-1".into())).await {
            Err(HubError::Failed(message)) => assert!(message.contains("302"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    /// A listener that hands each connection to `serve`, at once and on a task of its own;
    /// its URL.
    async fn serving_each<F, Fut>(serve: F) -> String
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket));
            }
        });
        format!("http://{address}/")
    }

    /// A 200 with a JSON `body`, as the hub writes it.
    fn ok_json(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// A hub whose server closes a connection that was idle past [`IDLE_CONNECTION`] just as
    /// the next request arrives on it (as a keep-alive a little longer than ours runs out): the
    /// call goes out on a new connection, and is answered.
    #[tokio::test]
    async fn a_connection_idle_for_long_is_not_used_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = serving_each(|mut socket| async move {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = ok_json(r#"{"status": "healthy", "version": "1.0"}"#);
            let _ = socket.write_all(answer.as_bytes()).await;
            // The next request on this connection finds it closing: no answer.
            let _ = socket.read(&mut request).await;
        })
        .await;
        let hub = hub_at(&url);
        assert_eq!(hub.health().await.unwrap().status, "healthy");
        tokio::time::sleep(IDLE_CONNECTION + Duration::from_millis(500)).await;
        assert_eq!(
            hub.health()
                .await
                .expect("asked on a new connection")
                .status,
            "healthy"
        );
    }

    /// A hub that answers every request after `delay`: an escalation (and a question) alike.
    async fn answering_after(delay: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        serving_each(move |mut socket| async move {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            tokio::time::sleep(delay).await;
            let answer = ok_json(
                r#"{"answer": "Use a queue", "confidence": 92, "status": "resolved", "id": "e-1", "created_at": "2026-01-01T00:00:00"}"#,
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        })
        .await
    }

    #[tokio::test]
    async fn a_question_waits_for_its_expert_longer_than_other_calls_wait() {
        let url = answering_after(Duration::from_millis(1500)).await;
        let hub = HttpAgentHub::new(
            &url,
            Duration::from_secs(4),
            Duration::from_millis(500),
            Arc::default(),
        )
        .unwrap();
        let question = HubQuestion {
            topic: "architecture".parse().unwrap(),
            question: "Which queue?".to_owned(),
            feature_id: "f-1".parse().unwrap(),
            context: None,
            session_id: HubSessionId("s-1".to_owned()),
        };
        let answer = hub.ask(&question).await.expect("the question waited");
        assert_eq!(answer.answer, "Use a queue");
        match hub.escalation(&EscalationId("e-1".into())).await {
            Err(HubError::Unavailable(message)) => {
                assert!(message.contains("in time"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_reroute_may_come_without_its_answer_and_confidence() {
        let read = |json: &str| answer_of(serde_json::from_str(json).unwrap());
        let rerouted = read(r#"{"answer": null, "confidence": null, "status": "needs_reroute"}"#)
            .expect("a reroute names no answer");
        assert_eq!(
            rerouted.status,
            orchestrator_core::hub::AnswerStatus::NeedsReroute
        );
        assert_eq!((rerouted.answer.as_str(), rerouted.confidence), ("", 0));
        for missing in [
            r#"{"answer": null, "confidence": 92, "status": "resolved"}"#,
            r#"{"answer": "Use a queue", "status": "resolved"}"#,
            r#"{"confidence": 40, "status": "pending_human", "escalation_id": "6f782cbc-1"}"#,
            // An escalation id the hub itself would refuse in a path.
            r#"{"answer": "Ask", "confidence": 40, "status": "pending_human", "escalation_id": "not-a-uuid"}"#,
            r#"{"answer": "Ask", "confidence": 40, "status": "pending_human",
                "escalation_id": "urn:uuid:6f782cbc-5e0b-4b9a-9d43-0c2e6f1f7a10"}"#,
            r#"{"answer": "Ask", "confidence": 40, "status": "pending_human",
                "escalation_id": "{6f782cbc-5e0b-4b9a-9d43-0c2e6f1f7a10}"}"#,
            r#"{"answer": "Ask", "confidence": 40, "status": "pending_human",
                "escalation_id": "6f782cbc5e0b4b9a9d430c2e6f1f7a10"}"#,
        ] {
            assert!(
                matches!(read(missing), Err(HubError::Failed(_))),
                "{missing}"
            );
        }
        let escalated = read(
            r#"{"answer": "Ask", "confidence": 40, "status": "pending_human",
                "escalation_id": "6f782cbc-5e0b-4b9a-9d43-0c2e6f1f7a10"}"#,
        )
        .unwrap();
        assert_eq!(
            escalated.escalation_id.map(|id| id.0).as_deref(),
            Some("6f782cbc-5e0b-4b9a-9d43-0c2e6f1f7a10")
        );
        let resolved =
            read(r#"{"answer": "Use a queue", "confidence": 92, "status": "resolved"}"#).unwrap();
        assert_eq!(
            (resolved.answer.as_str(), resolved.confidence),
            ("Use a queue", 92)
        );
    }

    #[test]
    fn confidence_must_be_a_percentage() {
        assert_eq!(confidence(92.0).unwrap(), 92);
        assert!(confidence(101.0).is_err());
        assert!(confidence(-1.0).is_err());
    }

    #[test]
    fn only_url_safe_escalation_ids_reach_a_path() {
        assert!(escalation_path(&EscalationId("6f782cbc-1".into())).is_ok());
        assert!(escalation_path(&EscalationId("../admin".into())).is_err());
        assert!(escalation_path(&EscalationId(String::new())).is_err());
    }
}
