//! A stand-in Agent Hub: the deployed hub's endpoints served by hyper, with scripted confidence,
//! for running the whole system on one machine and for tests. Not part of the product path:
//! it exists only with the `stand-in-hub` feature.
//!
//! It behaves like the deployed hub, quirks included: errors nested under `detail`, 422 with a
//! list for bad bodies, naive timestamps, sessions that expire an hour after creation, random
//! unstored session ids when none is given. A question containing `[confidence=NN]` gets that
//! confidence; any other gets 90, so `security` questions (threshold 95) are escalated.
//! Tests can also inject faults: plain-text 500s, bodies that are not JSON, delays, and answers
//! (or escalation look-ups) held until the test lets them go.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use orchestrator_core::hub::{AnswerStatus, EscalationStatus, HumanAction};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::wire;

/// Topics the stand-in routes, with the confidence each needs to answer without a human.
pub const TOPICS: [(&str, u8); 6] = [
    ("architecture", 80),
    ("testing", 80),
    ("frontend", 80),
    ("backend", 80),
    ("devops", 80),
    ("security", 95),
];

/// Something to go wrong with the next `POST /ask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 500 with the plain-text body `Internal Server Error`.
    PlainText500,
    /// 500 `AGENT_UNAVAILABLE` in the nested error shape.
    AgentUnavailable,
    /// 422 with a validation list.
    Unprocessable,
    /// 200 with a body that is not JSON.
    NotJson,
    /// 200 with an answer whose confidence is 150 (no percentage).
    ConfidenceOutOfRange,
    /// 200 `pending_human` naming the escalation `../admin`, which no path may hold.
    MalformedEscalationId,
    /// Answer normally, with a NUL and a bell in the answer, its rationale and doubts, and
    /// in the escalation's tentative answer if it escalates.
    ControlCharacters,
    /// 400 `SESSION_UNAVAILABLE`, whatever session the ask names (as if it had just expired).
    SessionUnavailable,
    /// Answer normally, but only after this long.
    Delay(Duration),
    /// Answer normally, but only once [`StandInHub::release`] lets it: for tests that need
    /// something to happen while the hub has a question in hand, whatever the machine's pace.
    Hold,
}

/// One ask the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskRecord {
    /// The topic in the path.
    pub topic: String,
    /// The session the ask named, if any.
    pub session_id: Option<String>,
}

#[derive(Debug)]
struct SessionState {
    created_at: DateTime<Utc>,
    closed: bool,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, SessionState>,
    escalations: HashMap<String, wire::Escalation>,
    faults: Vec<Fault>,
    /// Escalation look-ups still to hold, as [`Fault::Hold`] holds asks.
    held_lookups: usize,
    /// Escalation look-ups still to fail with a plain-text 500.
    failed_lookups: usize,
    /// Session creations still to hold, likewise.
    held_sessions: usize,
    asks: Vec<AskRecord>,
    sessions_created: usize,
    sessions_closed: usize,
}

/// The stand-in hub's state; clone it to keep a handle while it serves.
#[derive(Debug, Clone)]
pub struct StandInHub {
    state: Arc<Mutex<State>>,
    /// How many asks wait under [`Fault::Hold`].
    held: Arc<watch::Sender<usize>>,
    /// One permit for each [`StandInHub::release`] not yet taken by a held ask.
    releases: Arc<Semaphore>,
}

impl Default for StandInHub {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            held: Arc::new(watch::Sender::new(0)),
            releases: Arc::new(Semaphore::new(0)),
        }
    }
}

type HttpResponse = Response<Full<Bytes>>;

impl StandInHub {
    /// A hub with no sessions and no escalations.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `POST /ask` suffers `fault`; faults queue up in order.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// The next `GET /escalations/{id}` is held like an ask under [`Fault::Hold`]: counted by
    /// [`StandInHub::until_held`], answered (as the escalation stands then) once
    /// [`StandInHub::release`] lets it.
    pub fn hold_next_lookup(&self) {
        self.lock().held_lookups += 1;
    }

    /// The next `GET /escalations/{id}` answers 500 `Internal Server Error` in plain text, as
    /// a hub failing at it would.
    pub fn fail_next_lookup(&self) {
        self.lock().failed_lookups += 1;
    }

    /// The next `count` `POST /sessions` are held like an ask under [`Fault::Hold`]: for a
    /// test that needs several askers to open a session at once.
    pub fn hold_next_sessions(&self, count: usize) {
        self.lock().held_sessions += count;
    }

    /// Waits until `count` asks are held by [`Fault::Hold`]: each has reached the hub, which
    /// answers none of them before [`StandInHub::release`].
    pub async fn until_held(&self, count: usize) {
        // The hub owns the sender, so the channel never closes and the wait cannot fail.
        let _ = self.held.subscribe().wait_for(|held| *held >= count).await;
    }

    /// Lets one ask held by [`Fault::Hold`] answer (the next one held, if none is held now).
    pub fn release(&self) {
        self.releases.add_permits(1);
    }

    /// Holds this request as [`Fault::Hold`] holds an ask if the count `holds` picks is
    /// above zero, taking one from it.
    async fn hold_if(&self, holds: impl FnOnce(&mut State) -> &mut usize) {
        let hold = {
            let mut state = self.lock();
            let left = holds(&mut state);
            let hold = *left > 0;
            *left -= usize::from(hold);
            hold
        };
        if hold {
            self.hold().await;
        }
    }

    async fn hold(&self) {
        self.held.send_modify(|held| *held += 1);
        // The semaphore is never closed, so the acquire cannot fail.
        if let Ok(release) = self.releases.acquire().await {
            release.forget();
        }
        self.held.send_modify(|held| *held -= 1);
    }

    /// Every session closes, as if an hour had passed.
    pub fn expire_sessions(&self) {
        for session in self.lock().sessions.values_mut() {
            session.closed = true;
        }
    }

    /// Forgets every session, as a restarted hub would.
    pub fn forget_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// Forgets every escalation, as a hub that lost its database would: looking one up
    /// answers 404 `ESCALATION_NOT_FOUND`.
    pub fn forget_escalations(&self) {
        self.lock().escalations.clear();
    }

    /// A human acts on escalation `id`, as `POST /escalations/{id}` would.
    pub fn resolve(&self, id: &str, action: HumanAction, response: Option<&str>) -> bool {
        let mut state = self.lock();
        let Some(escalation) = state.escalations.get_mut(id) else {
            return false;
        };
        escalation.status = EscalationStatus::Resolved;
        escalation.human_action = Some(action);
        escalation.human_response = response.map(str::to_owned);
        escalation.human_responder = Some("stand-in reviewer".to_owned());
        escalation.resolved_at = Some(Utc::now());
        true
    }

    /// Every ask received, in order.
    pub fn asks(&self) -> Vec<AskRecord> {
        self.lock().asks.clone()
    }

    /// How many sessions were opened.
    pub fn sessions_created(&self) -> usize {
        self.lock().sessions_created
    }

    /// How many sessions were closed with `DELETE /sessions/{id}`.
    pub fn sessions_closed(&self) -> usize {
        self.lock().sessions_closed
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                () = &mut shutdown => return,
            };
            let hub = self.clone();
            let service = service_fn(move |request| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(hub.handle(request).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (Method::GET, ["health"]) => json(
                StatusCode::OK,
                &wire::Health {
                    status: "healthy".to_owned(),
                    version: "0.1.0".to_owned(),
                    uptime_seconds: 1.0,
                    connected_agents: TOPICS.iter().map(|(t, _)| format!("{t}-expert")).collect(),
                },
            ),
            (Method::POST, ["sessions"]) => {
                self.hold_if(|state| &mut state.held_sessions).await;
                self.create_session(&body)
            }
            (Method::DELETE, ["sessions", id]) => self.close_session(id),
            (Method::POST, ["ask", topic]) => self.ask(topic, &body).await,
            (Method::GET, ["escalations", id]) => {
                self.hold_if(|state| &mut state.held_lookups).await;
                let failed = {
                    let mut state = self.lock();
                    let failed = state.failed_lookups > 0;
                    state.failed_lookups = state.failed_lookups.saturating_sub(1);
                    failed
                };
                if failed {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
                }
                self.get_escalation(id)
            }
            (Method::POST, ["escalations", id]) => self.post_escalation(id, &body),
            // Not the hub's API: lets a person try a hub that lost its database.
            (Method::POST, ["_stand-in", "forget-escalations"]) => {
                self.forget_escalations();
                json(StatusCode::OK, &serde_json::json!({"forgotten": true}))
            }
            _ => hub_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint"),
        }
    }

    fn create_session(&self, body: &[u8]) -> HttpResponse {
        let Ok(request) = serde_json::from_slice::<wire::CreateSession>(body) else {
            return unprocessable("agent_id");
        };
        let id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let mut state = self.lock();
        state.sessions.insert(
            id.clone(),
            SessionState {
                created_at: now,
                closed: false,
            },
        );
        state.sessions_created += 1;
        json(
            StatusCode::CREATED,
            &wire::Session {
                id,
                agent_id: request.agent_id,
                feature_id: request.feature_id,
                status: "active".to_owned(),
                created_at: Some(now),
                updated_at: Some(now),
            },
        )
    }

    fn close_session(&self, id: &str) -> HttpResponse {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(id) else {
            return hub_error(
                StatusCode::NOT_FOUND,
                "SESSION_NOT_FOUND",
                &format!("session {id} not found"),
            );
        };
        session.closed = true;
        state.sessions_closed += 1;
        json(
            StatusCode::OK,
            &serde_json::json!({"id": id, "status": "closed"}),
        )
    }

    async fn ask(&self, topic: &str, body: &[u8]) -> HttpResponse {
        let fault = {
            let mut state = self.lock();
            (!state.faults.is_empty()).then(|| state.faults.remove(0))
        };
        match fault {
            Some(Fault::PlainText500) => {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
            }
            Some(Fault::AgentUnavailable) => {
                return hub_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "AGENT_UNAVAILABLE",
                    "the expert agent is unreachable",
                );
            }
            Some(Fault::Unprocessable) => return unprocessable("question"),
            Some(Fault::SessionUnavailable) => {
                return hub_error(
                    StatusCode::BAD_REQUEST,
                    "SESSION_UNAVAILABLE",
                    "session is closed or expired",
                );
            }
            Some(Fault::NotJson) => return text(StatusCode::OK, "<html>surprise</html>"),
            Some(Fault::ConfidenceOutOfRange) => {
                let answer = serde_json::json!({
                    "answer": "certainly", "confidence": 150, "status": "resolved",
                });
                return json(StatusCode::OK, &answer);
            }
            Some(Fault::MalformedEscalationId) => {
                let answer = serde_json::json!({
                    "answer": "ask a human", "confidence": 40, "status": "pending_human",
                    "escalation_id": "../admin",
                });
                return json(StatusCode::OK, &answer);
            }
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Fault::Hold) => self.hold().await,
            // Answered below, garbled.
            Some(Fault::ControlCharacters) | None => {}
        }
        // A slow expert, scripted like the confidence: `[delay=N]` seconds.
        if let Some(delay) = serde_json::from_slice::<wire::Ask>(body)
            .ok()
            .and_then(|ask| scripted_delay(&ask.question))
        {
            tokio::time::sleep(delay).await;
        }
        let Some((_, threshold)) = TOPICS.iter().find(|(t, _)| *t == topic) else {
            return hub_error(
                StatusCode::NOT_FOUND,
                "UNKNOWN_TOPIC",
                &format!("no expert for topic '{topic}'"),
            );
        };
        let request = match serde_json::from_slice::<wire::Ask>(body) {
            Ok(request) if request.question.chars().count() >= 10 => request,
            _ => return unprocessable("question"),
        };
        let mut state = self.lock();
        state.asks.push(AskRecord {
            topic: topic.to_owned(),
            session_id: request.session_id.clone(),
        });
        let session_id = match &request.session_id {
            Some(id) => match state.sessions.get(id) {
                None => {
                    return hub_error(
                        StatusCode::NOT_FOUND,
                        "SESSION_NOT_FOUND",
                        &format!("session {id} not found"),
                    );
                }
                Some(s) if s.closed || Utc::now() - s.created_at > chrono::Duration::hours(1) => {
                    return hub_error(
                        StatusCode::BAD_REQUEST,
                        "SESSION_UNAVAILABLE",
                        &format!("session {id} is closed or expired"),
                    );
                }
                Some(_) => id.clone(),
            },
            // The quirk: a random id that is never stored.
            None => uuid::Uuid::new_v4().to_string(),
        };
        let confidence = scripted_confidence(&request.question);
        let garbled = fault == Some(Fault::ControlCharacters);
        let noise = if garbled { "\0\u{7}" } else { "" };
        let answer = format!("The {topic} expert's view on: {}{noise}", request.question);
        let escalated = confidence < *threshold;
        let escalation_id = escalated.then(|| {
            let id = uuid::Uuid::new_v4().to_string();
            state.escalations.insert(
                id.clone(),
                wire::Escalation {
                    id: id.clone(),
                    status: EscalationStatus::Pending,
                    question: request.question.clone(),
                    tentative_answer: answer.clone(),
                    confidence: f64::from(confidence),
                    uncertainty_reasons: Some(vec![format!(
                        "confidence {confidence} is below {threshold}"
                    )]),
                    human_action: None,
                    human_response: None,
                    human_responder: None,
                    created_at: Some(Utc::now()),
                    resolved_at: None,
                },
            );
            id
        });
        json(
            StatusCode::OK,
            &wire::Answer {
                answer: Some(answer),
                rationale: garbled.then(|| format!("because{noise}")),
                confidence: Some(f64::from(confidence)),
                uncertainty_reasons: (escalated || garbled)
                    .then(|| vec![format!("scripted low confidence{noise}")]),
                status: if escalated {
                    AnswerStatus::PendingHuman
                } else {
                    AnswerStatus::Resolved
                },
                session_id: Some(session_id),
                escalation_id,
            },
        )
    }

    fn get_escalation(&self, id: &str) -> HttpResponse {
        if uuid::Uuid::parse_str(id).is_err() {
            return hub_error(
                StatusCode::BAD_REQUEST,
                "INVALID_UUID",
                &format!("'{id}' is not a UUID"),
            );
        }
        match self.lock().escalations.get(id) {
            Some(escalation) => json(StatusCode::OK, escalation),
            None => hub_error(
                StatusCode::NOT_FOUND,
                "ESCALATION_NOT_FOUND",
                &format!("escalation {id} not found"),
            ),
        }
    }

    fn post_escalation(&self, id: &str, body: &[u8]) -> HttpResponse {
        let Ok(response) = serde_json::from_slice::<wire::HumanResponse>(body) else {
            return unprocessable("action");
        };
        if response.action != HumanAction::Confirm && response.response.is_none() {
            return hub_error(
                StatusCode::BAD_REQUEST,
                "MISSING_RESPONSE",
                "correct and add_context need a response",
            );
        }
        {
            let mut state = self.lock();
            let Some(escalation) = state.escalations.get_mut(id) else {
                return hub_error(
                    StatusCode::NOT_FOUND,
                    "ESCALATION_NOT_FOUND",
                    &format!("escalation {id} not found"),
                );
            };
            if escalation.status != EscalationStatus::Pending {
                return hub_error(
                    StatusCode::CONFLICT,
                    "ALREADY_RESOLVED",
                    &format!("escalation {id} is resolved already"),
                );
            }
            escalation.status = EscalationStatus::Resolved;
            escalation.human_action = Some(response.action);
            escalation.human_response = response.response.clone();
            escalation.human_responder = Some(response.responder.clone());
            escalation.resolved_at = Some(Utc::now());
        }
        self.get_escalation(id)
    }
}

/// `[delay=N]` in the question: the expert takes N seconds (at most an hour).
fn scripted_delay(question: &str) -> Option<Duration> {
    question
        .split("[delay=")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map(|n| Duration::from_secs(n.min(3600)))
}

/// `[confidence=NN]` in the question, else 90.
fn scripted_confidence(question: &str) -> u8 {
    question
        .split("[confidence=")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.trim().parse().ok())
        .map_or(90, |n: u8| n.min(100))
}

fn json(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// The deployed hub's own error shape: nested under `detail`.
fn hub_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    json(
        status,
        &serde_json::json!({"detail": {"error": {"code": code, "message": message}}}),
    )
}

fn unprocessable(field: &str) -> HttpResponse {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({"detail": [{"type": "value_error", "loc": ["body", field], "msg": "invalid value"}]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_scripted_by_a_marker() {
        assert_eq!(
            scripted_delay("slow one [delay=3]"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(scripted_delay("fast one"), None);
    }

    #[test]
    fn confidence_is_scripted_by_a_marker() {
        assert_eq!(scripted_confidence("is this safe? [confidence=40]"), 40);
        assert_eq!(scripted_confidence("is this safe?"), 90);
        assert_eq!(scripted_confidence("[confidence=x]"), 90);
    }
}
