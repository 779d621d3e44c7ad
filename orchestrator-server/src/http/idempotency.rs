//! Idempotency keys on every POST: the key read and checked, the request claimed in the
//! store before it runs, and what it answered kept. A handler that changes something renders
//! its answer before the commit and hands it over sealed (`Claimed::receipt`), so the store
//! keeps the answer in the change's own transaction (a new workflow, an advance, a
//! consultation); anything else — a refusal, an answer that changed nothing — is kept right
//! after it is made. A repeat gets the kept answer back with `Idempotent-Replayed: true`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use orchestrator_core::{
    IdempotencyKey, KeyClaim, Receipt, RepositoryError, Seal, Timestamp, ValidationError,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::App;
use super::auth::Caller;
use super::error::{ApiError, Result};

type HttpResponse = Response<Full<Bytes>>;

/// The request header.
pub const KEY_HEADER: &str = "idempotency-key";

/// The header of a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// How long a key and its answer are kept.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest key.
const MAX_KEY_LEN: usize = 255;

/// The headers an answer keeps (the rest are the connection's or recomputed).
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::ETAG, header::LOCATION];

/// The request's idempotency key, scoped to its caller; `None` without the header. A key that
/// is not 1–255 printable ASCII characters is 400 naming `Idempotency-Key`, and so is a
/// header given twice (a proxy's key beside the client's: neither is taken for the other).
/// Spaces may stand inside a key; around it HTTP drops them before the key is read.
pub fn key(headers: &HeaderMap, caller: &Caller) -> Result<Option<IdempotencyKey>> {
    let mut values = headers.get_all(KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        let twice = ValidationError::new("Idempotency-Key", "must be given once, not twice");
        return Err(twice.into());
    }
    let bad = || {
        ValidationError::new(
            "Idempotency-Key",
            format!("must be 1-{MAX_KEY_LEN} printable ASCII characters"),
        )
    };
    let bytes = value.as_bytes();
    let printable = |b: &u8| *b == b' ' || b.is_ascii_graphic();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(printable) {
        return Err(bad().into());
    }
    let key = value.to_str().map_err(|_| bad())?.to_owned();
    let scope = caller
        .principal()
        .map_or_else(|| "*".to_owned(), |p| p.name.to_string());
    Ok(Some(IdempotencyKey { scope, key }))
}

/// What makes two requests the same: method, path (percent-decoded, as its ids are read:
/// `/workflow/rk%2D1/advance` is `rk-1`'s), `If-Match` (which says what the body's
/// `expected_version` would) and body (SHA-256, hex). Without `If-Match`, the hash is that of
/// method, path and body alone, as before the header counted.
pub fn fingerprint(request: &http::request::Parts, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(request.method.as_str().as_bytes());
    hash.update(b" ");
    // Decoded unless that would put a space or a line break in it (no valid path has one).
    let path = request.uri.path();
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()
        .filter(|decoded| !decoded.contains(|c: char| c.is_whitespace() || c.is_control()));
    hash.update(decoded.as_deref().unwrap_or(path).as_bytes());
    if let Some(if_match) = request.headers.get(header::IF_MATCH) {
        // A path holds no space, a header value no line break: no other request hashes so.
        hash.update(b" if-match:");
        hash.update(if_match.as_bytes());
    }
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A request that claimed its key: handlers that change something seal their answer with it
/// so the store keeps both in one transaction.
#[derive(Debug, Clone)]
pub struct Claimed {
    key: IdempotencyKey,
    /// The claim's lease, which names it: the store keeps the answer (and the change) only
    /// while the key is still under it.
    lease_until: Timestamp,
    kept: Arc<AtomicBool>,
    /// Whether a seal of this claim made its receipt (for a write that may not need one).
    sealed: Arc<AtomicBool>,
}

impl Claimed {
    /// The seal that keeps, with the change it answers, the answer `answer` makes of the
    /// changed value.
    pub fn seal<T>(&self, answer: impl Fn(&T) -> Answer + Send + Sync + 'static) -> Seal<T> {
        let key = self.key.clone();
        let lease_until = self.lease_until;
        let sealed = self.sealed.clone();
        Arc::new(move |value: &T| {
            sealed.store(true, Ordering::Relaxed);
            Receipt {
                key: key.clone(),
                lease_until,
                answer: answer(value).encode(),
            }
        })
    }

    /// Says the store committed the sealed answer with the change: nothing is left to keep.
    pub fn kept(&self) {
        self.kept.store(true, Ordering::Relaxed);
    }

    /// [`Claimed::kept`] if a seal made its receipt, for a request that succeeded: a write
    /// that needed none (nothing changed) leaves the answer to be kept after it.
    pub fn kept_if_sealed(&self) {
        if self.sealed.load(Ordering::Relaxed) {
            self.kept();
        }
    }
}

/// An answer as it is sent and kept: status, the headers worth keeping, body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// Without the body: a webhook's creation holds its secret.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: String) -> Self {
        Answer {
            status: status.as_u16(),
            headers: vec![(
                header::CONTENT_TYPE.as_str().to_owned(),
                "application/json".to_owned(),
            )],
            body,
        }
    }

    /// An answer with no body.
    pub fn empty(status: StatusCode) -> Self {
        Answer {
            status: status.as_u16(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name.as_str().to_owned(), value));
        self
    }

    /// The response.
    pub fn into_response(self) -> HttpResponse {
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }

    /// The answer of a response (its body is in memory already).
    async fn of(response: HttpResponse) -> (Answer, HttpResponse) {
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let answer = Answer {
            status: parts.status.as_u16(),
            headers: KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(name)?.to_str().ok()?;
                    Some((name.as_str().to_owned(), value.to_owned()))
                })
                .collect(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        };
        (answer, Response::from_parts(parts, Full::new(bytes)))
    }

    fn encode(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn decode(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok()
    }
}

/// Pauses between the quick tries of [`let_go`]: a pool whose connections the database dropped
/// (a restart, `pg_terminate_backend`) fails a try on each dead one it lends before a new one.
const QUICK_RETRIES: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(200),
];

/// How long the quick tries of [`let_go`] may hold the answer in all: a database that does not
/// answer (each try waiting out a connection's timeout) is tried again in the background.
const QUICK_RELEASE: Duration = Duration::from_millis(500);

/// Frees the claim on `key` (under the lease ending `lease_until`, `now` on the server's
/// clock) of a request that kept no answer, so that its retry runs again rather than hearing
/// `IDEMPOTENCY_KEY_IN_USE` until the lease ends: see [`released`]; `held` says the claim was
/// surely stored.
async fn let_go(
    repository: &Arc<dyn orchestrator_core::WorkflowRepository>,
    key: &IdempotencyKey,
    now: Timestamp,
    lease_until: Timestamp,
    held: bool,
) {
    let release = {
        let (repository, key) = (repository.clone(), key.clone());
        move || {
            let (repository, key) = (repository.clone(), key.clone());
            async move { repository.release_key(&key, lease_until).await }
        }
    };
    let lease = (lease_until - now).to_std().unwrap_or_default();
    released(release, lease, held, key.key.clone()).await;
}

/// Tries `release` (of the key named `shown`, whose lease ends in `lease`) again at once on
/// failure, for at most [`QUICK_RELEASE`]; then, if `held`, once a second in a background task
/// (returned) until the lease ends, after which the key is free anyway.
async fn released<F, Fut, E>(
    release: F,
    lease: Duration,
    held: bool,
    shown: String,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let lease_ends = tokio::time::Instant::now() + lease;
    let mut why = match tokio::time::timeout(QUICK_RELEASE, tried(&release, &QUICK_RETRIES)).await {
        Ok(Ok(())) => return None,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the database did not answer in time".to_owned(),
    };
    if !held {
        tracing::debug!(key = %shown, error = %why, "a failed claim of an idempotency key was not released");
        return None;
    }
    Some(tokio::spawn(async move {
        while tokio::time::Instant::now() < lease_ends {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match tokio::time::timeout_at(lease_ends, release()).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => why = e.to_string(),
                Err(_) => break,
            }
        }
        tracing::warn!(
            key = %shown,
            error = %why,
            "an idempotency key stayed held until its lease ended: the database could not free \
             it (a retry meanwhile was 409 IDEMPOTENCY_KEY_IN_USE)"
        );
    }))
}

/// `attempt` until it succeeds, tried again after each of `pauses`: the last outcome.
async fn tried<F, Fut, E>(attempt: &F, pauses: &[Duration]) -> std::result::Result<(), E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<(), E>>,
{
    let mut outcome = attempt().await;
    for pause in pauses {
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(*pause).await;
        outcome = attempt().await;
    }
    outcome
}

/// Runs `handle` for a request with idempotency key `key` (method, path, body as given):
/// claims the key, replays a kept answer or refuses a reused or busy key, and keeps what
/// `handle` answered (a 5xx releases the key instead, so a retry runs again).
pub async fn run<F, Fut>(
    app: &App,
    key: IdempotencyKey,
    fingerprint: &str,
    handle: F,
) -> Result<HttpResponse>
where
    F: FnOnce(Claimed) -> Fut,
    Fut: Future<Output = Result<HttpResponse>>,
{
    let repository = app.orchestrator().repository();
    let now = app.now();
    let lease_until = now + lease(app.limits().request_timeout);
    let claim = match repository
        .claim_key(&key, fingerprint, now, lease_until, expired_before(now))
        .await
    {
        Ok(claim) => claim,
        Err(e) => {
            // The claim may have been stored all the same (a commit whose acknowledgement was
            // lost, or a statement bound that ran out after it): free it, or the key would be
            // held by nobody until its lease ends. Only an unanswered claim under this very
            // lease is released. In the background: the store is failing, and the answer
            // should not wait for a second failure.
            let (repository, key) = (repository.clone(), key.clone());
            tokio::spawn(async move { let_go(&repository, &key, now, lease_until, false).await });
            return Err(orchestrator_core::Error::from(e).into());
        }
    };
    match claim {
        KeyClaim::Answered(stored) => replay(&stored),
        KeyClaim::InUse => Err(ApiError::IdempotencyKeyInUse),
        KeyClaim::Reused => Err(ApiError::IdempotencyKeyReused),
        KeyClaim::Claimed => {
            let kept = Arc::new(AtomicBool::new(false));
            let claimed = Claimed {
                key: key.clone(),
                lease_until,
                kept: kept.clone(),
                sealed: Arc::default(),
            };
            // A panic in the handler (a bug) is a 500 like any other: the key is let go below.
            let response = match AssertUnwindSafe(handle(claimed)).catch_unwind().await {
                Ok(answered) => answered.unwrap_or_else(ApiError::into_response),
                Err(panic) => ApiError::panicked(&*panic).into_response(),
            };
            if kept.load(Ordering::Relaxed) {
                return Ok(response);
            }
            if response.status().is_server_error() {
                let_go(repository, &key, app.now(), lease_until, true).await;
                return Ok(response);
            }
            let (answer, response) = Answer::of(response).await;
            let receipt = Receipt {
                key,
                lease_until,
                answer: answer.encode(),
            };
            match repository.answer_key(&receipt).await {
                Ok(()) => {}
                // A retry took the key over (this request outlived its lease): its answer is
                // the key's. Worth an operator's eye: a stalled write or clocks apart.
                Err(RepositoryError::KeyTakenOver(_)) => tracing::warn!(
                    key = %receipt.key.key,
                    "a request outlived its idempotency key's lease and a retry took the key over; nothing of this request was stored"
                ),
                Err(e) => tracing::warn!(error = %e, "an idempotent request's answer was not kept"),
            }
            Ok(response)
        }
    }
}

/// A kept answer, sent again.
fn replay(stored: &str) -> Result<HttpResponse> {
    let answer = Answer::decode(stored)
        .ok_or_else(|| ApiError::Internal("a kept answer does not decode".to_owned()))?;
    let mut response = answer.into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(response)
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or_else(|_| chrono::Duration::days(1))
}

/// Keys first claimed before this, at `now`, are past their day.
pub fn expired_before(now: Timestamp) -> Timestamp {
    now - to_chrono(KEPT_FOR)
}

/// How long a claim holds its key: the request bound (`request_timeout`) and 5 s.
fn lease(request_timeout: Duration) -> chrono::Duration {
    to_chrono(request_timeout + Duration::from_secs(5))
}

/// Keys first claimed before this, at `now`, may be purged: past their day and the lease of a
/// retry that took one over just before the day ended (which holds it until that lease ends),
/// and an hour more, so a replica whose clock runs ahead of the one that stamped a key does
/// not delete it early.
pub fn purgeable_before(now: Timestamp, request_timeout: Duration) -> Timestamp {
    expired_before(now) - lease(request_timeout) - chrono::Duration::hours(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DatabaseUrl;

    #[test]
    fn a_key_is_purged_only_past_its_day_the_longest_lease_and_an_hour() {
        let now = chrono::Utc::now();
        // A request bound of 60 s: leases of 65 s.
        let before = purgeable_before(now, Duration::from_secs(60));
        assert_eq!(
            expired_before(now) - before,
            chrono::Duration::seconds(65) + chrono::Duration::hours(1)
        );
    }

    #[test]
    fn a_kept_answers_debug_leaves_its_body_out() {
        let answer = Answer::json(StatusCode::CREATED, r#"{"secret":"whsec_x"}"#.into());
        let shown = format!("{answer:?}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("201"), "{shown}");
    }

    /// A release that fails (on a pooled connection the database dropped) is tried again
    /// after each pause until one succeeds, and no more.
    #[tokio::test(start_paused = true)]
    async fn a_failed_release_is_tried_again() {
        use std::sync::atomic::AtomicUsize;
        let calls = AtomicUsize::new(0);
        let failing_twice = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(n) } else { Ok(()) } }
        };
        assert_eq!(tried(&failing_twice, &QUICK_RETRIES).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let always = AtomicUsize::new(0);
        let failing = || {
            always.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("down") }
        };
        assert_eq!(tried(&failing, &QUICK_RETRIES).await, Err("down"));
        assert_eq!(always.load(Ordering::SeqCst), 1 + QUICK_RETRIES.len());
    }

    /// A release the store fails: tried at once for half a second at most (the answer waits
    /// no longer, even for a store that does not answer), then — for a claim surely stored —
    /// each second in the background until the lease ends, and no longer.
    #[tokio::test(start_paused = true)]
    async fn a_key_s_release_is_tried_again_until_its_lease_ends() {
        use std::sync::atomic::AtomicUsize;
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("connection closed") }
            }
        };
        let began = tokio::time::Instant::now();
        let lease = Duration::from_secs(5);
        let background = released(failing.clone(), lease, true, "k".into()).await;
        assert!(began.elapsed() <= QUICK_RELEASE, "{:?}", began.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 1 + QUICK_RETRIES.len());
        background
            .expect("tried on in the background")
            .await
            .unwrap();
        assert!(
            began.elapsed() <= lease + Duration::from_secs(1),
            "{:?}",
            began.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) >= 1 + QUICK_RETRIES.len() + 4);

        // A claim that may never have been stored: the quick tries only.
        calls.store(0, Ordering::SeqCst);
        assert!(released(failing, lease, false, "k".into()).await.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 1 + QUICK_RETRIES.len());

        // A store that does not answer holds the answer half a second, not each try's wait.
        let silent = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), &str>(())
        };
        let began = tokio::time::Instant::now();
        assert!(released(silent, lease, false, "k".into()).await.is_none());
        assert_eq!(began.elapsed(), QUICK_RELEASE);

        // A release that goes through leaves nothing to do.
        let fine = || async { Ok::<(), &str>(()) };
        assert!(released(fine, lease, true, "k".into()).await.is_none());
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_and_lets_its_key_go() {
        let config = crate::Config::for_tests(DatabaseUrl::SqliteMemory);
        let app = crate::build_app(&config).await.unwrap();
        let key = || IdempotencyKey {
            scope: "*".to_owned(),
            key: "k".to_owned(),
        };
        let panicked = run(&app, key(), "fp", |_| async {
            panic!("a bug in a handler")
        })
        .await
        .unwrap();
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Let go: the retry runs (it would be IDEMPOTENCY_KEY_IN_USE for the lease).
        let retried = run(&app, key(), "fp", |_| async {
            Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
        })
        .await
        .unwrap();
        assert_eq!(retried.status(), StatusCode::OK);
    }
}
