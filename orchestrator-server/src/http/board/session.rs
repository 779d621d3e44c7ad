//! The board's sessions: the cookie, what a session is and whether it still holds, the CSRF
//! token and the `Origin` check, and the caller a session makes of an API request.
//!
//! A session is a random 256-bit id in an HttpOnly, SameSite=Strict cookie; the store keeps
//! its SHA-256, the actor, the credential that signed it in and a CSRF token, for 12 hours or
//! until sign-out. It holds only while that credential does (see [`holder`]).

use std::collections::BTreeSet;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, header};
use orchestrator_core::{Actor, ActorKind, Principal, Role};
use subtle::ConstantTimeEq;

use super::views;
use crate::http::App;
use crate::http::auth::{Auth, Caller};
use crate::http::error::ApiError;
use crate::principals::{to_hex, token_hash};
use crate::storage::BoardSession;

/// The cookie that carries a board session's id.
pub const SESSION_COOKIE: &str = "orchestrator_session";
/// The same cookie over HTTPS: the `__Host-` prefix makes the browser refuse it unless it is
/// `Secure`, for this host only and for every path, so no other host of the domain can plant
/// one (cookies do not tell ports apart: another service on this host name still could).
pub const SECURE_SESSION_COOKIE: &str = "__Host-orchestrator_session";
/// The header the board's script sends the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub(super) const SESSION_HOURS: i64 = 12;
/// The caller a board session makes of an API request that has the session's cookie and no
/// `Authorization`, and the session's key (so a stream can end with the session): 401 without
/// a live session; a write without the session's CSRF token, or from another origin, is 403.
pub(crate) async fn api_caller(app: &App, parts: &Parts) -> Result<(Caller, String), ApiError> {
    let key = session_key(&parts.headers).ok_or(ApiError::Unauthorized)?;
    let session = session_by_key(app, &key)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        let given = parts
            .headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !session.csrf_matches(given) {
            return Err(ApiError::Forbidden(
                "a write with the board's session needs its CSRF token in X-CSRF-Token".into(),
            ));
        }
        same_origin(&parts.headers)?;
    }
    Ok((Caller::Board(Box::new(session.caller)), key))
}

/// Whether the session with this key still holds (a stream opened with it ends when not).
/// A store that cannot be read keeps it: the stream ends with the store's next answer.
pub(crate) async fn still_signed_in(app: &App, key: &str) -> bool {
    !matches!(session_by_key(app, key).await, Ok(None))
}

/// Whether the request carries a board session cookie (and so may be answered by
/// [`api_caller`]).
pub(crate) fn has_session_cookie(headers: &HeaderMap) -> bool {
    session_id(headers).is_some()
}

/// A live session, with who it acts as now.
pub(super) struct Session {
    pub(super) record: BoardSession,
    pub(super) caller: Caller,
    pub(super) kind: ActorKind,
}

impl Session {
    /// Whether `given` is the session's CSRF token (compared in constant time).
    pub(super) fn csrf_matches(&self, given: &[u8]) -> bool {
        bool::from(given.ct_eq(self.record.csrf.as_bytes()))
    }

    pub(super) fn who(&self) -> views::Who<'_> {
        views::Who {
            name: &self.record.actor,
            kind: self.kind,
            csrf: &self.record.csrf,
        }
    }
}

/// The key of the session the request's cookie names: the SHA-256 of its id.
pub(super) fn session_key(headers: &HeaderMap) -> Option<String> {
    session_id(headers).map(|id| to_hex(&token_hash(id)))
}

/// The session id the request's cookie carries (the `__Host-` one first). Over HTTPS only the
/// `__Host-` one counts: the plain cookie could have been planted by another host of the
/// domain or over plain HTTP.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    let secure = cookie(headers, SECURE_SESSION_COOKIE);
    if is_https(headers) {
        secure
    } else {
        secure.or_else(|| cookie(headers, SESSION_COOKIE))
    }
}

/// The session the request's cookie names, if it holds (see [`session_by_key`]).
pub(super) async fn session(app: &App, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    match session_key(headers) {
        Some(key) => session_by_key(app, &key).await,
        None => Ok(None),
    }
}

/// The session with this key, if it has not ended and the credential that signed it in still
/// holds: the same principal's token in the file, the same shared token, or an open server.
pub(super) async fn session_by_key(app: &App, key: &str) -> Result<Option<Session>, ApiError> {
    let Some(store) = app.sessions() else {
        return Ok(None);
    };
    let Some(record) = store
        .session(key, app.now())
        .await
        .map_err(|e| ApiError::Core(e.into()))?
    else {
        return Ok(None);
    };
    Ok(holder(app.auth(), &record).map(|(caller, kind)| Session {
        record,
        caller,
        kind,
    }))
}

/// What a session signed in with `token` records as its credential under the server's mode.
pub(super) fn credential(auth: &Auth, token: &str) -> String {
    match auth {
        Auth::Open => "open".to_owned(),
        Auth::Shared(_) => format!("shared:{}", to_hex(&token_hash(token))),
        Auth::Principals { .. } => format!("principal:{}", to_hex(&token_hash(token))),
    }
}

/// Who a stored session acts as now, if the credential that made it still holds: a session
/// made under another mode, with a token since rotated, or by a principal since removed is no
/// session.
fn holder(auth: &Auth, record: &BoardSession) -> Option<(Caller, ActorKind)> {
    // Without principals a session acts as the name given at sign-in, a person, with a
    // reviewer's rights (what the board does). With a shared token the API takes the cookie as
    // this caller, so the server records that name on the session's decisions as it does a
    // principal's, whatever a request's body says (but for a body that says it is an agent's:
    // refused, as `Advance::by` has it); an open server takes no cookie for the API
    // (anyone may call anything), so there the board's script sends the name in the body.
    let named = || {
        let name = Actor::parse(&record.actor).ok()?;
        let person = Principal {
            name,
            kind: ActorKind::Human,
            roles: BTreeSet::from([Role::Reviewer]),
        };
        Some((Caller::Principal(person), ActorKind::Human))
    };
    match auth {
        Auth::Open => (record.credential == "open").then(named).flatten(),
        Auth::Shared(token) => (record.credential == credential(auth, token.expose()))
            .then(named)
            .flatten(),
        Auth::Principals { .. } => {
            let hash = record.credential.strip_prefix("principal:")?;
            let principal = auth.principal_with_token_hash(hash)?;
            let kind = principal.kind;
            (principal.name.as_str() == record.actor)
                .then_some((Caller::Principal(principal), kind))
        }
    }
}

/// The value of the cookie `name`, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// 403 if the request names an `Origin` other than the server it was sent to.
pub(super) fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    // Behind a TLS-terminating proxy that says so, only the https origin is this server's.
    let authority = if is_https(headers) {
        origin.strip_prefix("https://")
    } else {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
    };
    if authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a request from {origin} may not act on this board"
        )))
    }
}

/// Whether a TLS-terminating proxy says the browser used HTTPS (`X-Forwarded-Proto: https`;
/// behind proxies in a chain, each adding its own, the first says what the browser used).
/// Trusted as the proxy nearest the server leaves it: one that does not overwrite the header
/// lets a client say what it likes, which changes only that client's own cookie.
pub(super) fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The session cookie `Set-Cookie` sends: over HTTPS `__Host-` and `Secure`, so it never
/// travels over plain HTTP and nothing else can plant it.
pub(super) fn session_cookie(headers: &HeaderMap, value: &str, max_age: i64) -> String {
    let (name, secure) = if is_https(headers) {
        (SECURE_SESSION_COOKIE, "; Secure")
    } else {
        (SESSION_COOKIE, "")
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// 32 random bytes in hexadecimal: a session id or a CSRF token.
pub(super) fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a session: {e}")))?;
    Ok(to_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; orchestrator_session=abc; b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "orchestrator_session=xyz")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(
            cookie(
                &headers(&[("cookie", "orchestrator_session=")]),
                SESSION_COOKIE
            ),
            None
        );
        assert_eq!(cookie(&headers(&[]), SESSION_COOKIE), None);
    }

    /// Proxies in a chain each add the scheme they were reached by: the first is the browser's.
    #[test]
    fn the_browsers_scheme_is_the_first_a_proxy_chain_names() {
        for (value, https) in [
            ("https", true),
            (" HTTPS ", true),
            ("https, http", true),
            ("http, https", false),
            ("http", false),
            ("", false),
        ] {
            assert_eq!(
                is_https(&headers(&[("x-forwarded-proto", value)])),
                https,
                "{value}"
            );
        }
        assert!(!is_https(&headers(&[])));
        assert!(
            session_cookie(&headers(&[("x-forwarded-proto", "https,https")]), "v", 1)
                .contains("; Secure")
        );
    }

    #[test]
    fn only_the_servers_own_origin_may_write() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(
            same_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]))
            .is_ok()
        );
        assert!(
            same_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example")
            ]))
            .is_err()
        );
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])).is_err());
        // Behind a TLS proxy that says so, only the https origin is this server's.
        let proxied = |origin: &'static str| {
            same_origin(&headers(&[
                ("host", "board.example"),
                ("x-forwarded-proto", "https"),
                ("origin", origin),
            ]))
        };
        assert!(proxied("https://board.example").is_ok());
        assert!(proxied("http://board.example").is_err());
    }

    #[test]
    fn the_secure_cookie_is_found_first() {
        let h = headers(&[(
            "cookie",
            "orchestrator_session=plain; __Host-orchestrator_session=secure",
        )]);
        assert_eq!(session_id(&h), Some("secure"));
        assert!(has_session_cookie(&h));
    }
}
