//! The only JSON helpers of the HTTP layer: read a request body (size capped, in time), parse
//! it (content type checked) into a wire type, and write a wire type as a JSON response.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 256 * 1024;

/// The largest body of a board form (sign-in, sign-out), in bytes: they hold a token, a name
/// and a path. Read before anyone is known, a form may not reserve more of the budget than
/// this, so the connections a server takes cannot hold all of it.
pub const FORM_LIMIT: usize = 8 * 1024;

/// Memory all request bodies being read may hold together, in KiB. A body reserves its
/// declared length (or the whole limit when it declares none) before it is read.
const BODY_BUDGET_KIB: usize = 32 * 1024;

/// Bodies being read: their total size is bounded by a budget, and each must arrive within
/// a time bound. Slow or stalled senders therefore hold neither memory nor a handler for long.
#[derive(Debug)]
pub struct BodyGate {
    budget: tokio::sync::Semaphore,
    timeout: std::time::Duration,
}

impl BodyGate {
    /// A gate giving each body `timeout` to arrive (the wait for budget included).
    pub fn new(timeout: std::time::Duration) -> Self {
        BodyGate {
            budget: tokio::sync::Semaphore::new(BODY_BUDGET_KIB),
            timeout,
        }
    }
}

/// Reads a request body of at most `limit` bytes ([`BODY_LIMIT`], or [`FORM_LIMIT`]), within
/// the gate's time and memory bounds: 413 `PAYLOAD_TOO_LARGE` past the limit, 408
/// `REQUEST_TIMEOUT` if it does not arrive in time, 503 `SERVICE_UNAVAILABLE` if too many
/// bodies are being read to reserve its memory in time.
pub async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    gate: &BodyGate,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large);
    }
    let reserve_kib = declared
        .map_or(limit, |len| len as usize)
        .div_ceil(1024)
        .max(1);
    let deadline = tokio::time::Instant::now() + gate.timeout;
    let reservation = tokio::time::timeout_at(
        deadline,
        gate.budget
            .acquire_many(u32::try_from(reserve_kib).unwrap_or(u32::MAX)),
    )
    .await;
    let _reserved = match reservation {
        Ok(Ok(permit)) => permit,
        _ => return Err(ApiError::BodiesBusy),
    };
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limit).collect());
    match collected.await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Ok(Err(e)) => {
            // The HTTP library's words stay in the log; the answer says what happened in ours.
            tracing::debug!(error = %e, "a request body could not be read");
            Err(ApiError::UnreadableBody)
        }
    }
}

/// Parses a body [`read_body`] read into `T`, a JSON object: 415 `UNSUPPORTED_MEDIA_TYPE`
/// unless the request says it is JSON, 400 `INVALID_JSON` if it is empty, not an object, or
/// not `T`.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    require_json(headers)?;
    // A byte order mark some editors and tools put first: no part of JSON, nothing lost.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(ApiError::InvalidJson("the body is empty".to_owned())),
        // Said plainly: serde would answer `[]` with the name of a Rust type and its field
        // count ("expected struct StartWorkflowRequest with 5 elements").
        Some(b) if *b != b'{' => Err(ApiError::InvalidJson(
            "the body must be a JSON object ({...})".to_owned(),
        )),
        Some(_) => serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string())),
    }
}

/// 415 `UNSUPPORTED_MEDIA_TYPE` unless the request says its body is JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType("application/json"));
    }
    not_encoded(headers)
}

/// Refuses a body with a `Content-Encoding` other than `identity` (415, as HTTP has it): read
/// as sent, a gzipped body would be refused as JSON that is not an object, which misleads.
pub fn not_encoded(headers: &HeaderMap) -> Result<(), ApiError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let encoded = text
            .split(',')
            .map(str::trim)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if encoded {
            return Err(ApiError::UnsupportedEncoding(
                orchestrator_core::values::shown(&text),
            ));
        }
    }
    Ok(())
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed, or any
/// `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A response with `value` as its JSON body.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, "application/json", Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "response body did not serialise");
            bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                Bytes::from_static(br#"{"error":{"code":"INTERNAL","message":"internal error"}}"#),
            )
        }
    }
}

/// A response with a body of the given content type.
pub fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A request's query string as decoded `(name, value)` pairs, in order.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}
