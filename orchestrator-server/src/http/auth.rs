//! Who is calling: the three modes — open, one shared token, principals — and the one check
//! each request passes before its handler runs.
//!
//! In open and shared-token modes the caller holds every role and the body says who acts
//! (`actor`, `actor_kind`, trusted). In principals mode the bearer token names a principal
//! (see `crate::principals`): its roles decide what it may do, and it is the actor.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use http::{HeaderMap, header};
use orchestrator_core::{Action, Actor, Principal, Role};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Secret;
use crate::principals::{Principals, PrincipalsError};

/// How requests are authenticated, fixed at start-up.
#[derive(Debug)]
pub enum Auth {
    /// No token: everybody may do everything.
    Open,
    /// One bearer token with every role.
    Shared(Secret),
    /// Bearer tokens of principals from a file, re-read by [`Auth::reload`].
    Principals {
        /// The file.
        file: PathBuf,
        /// Its last good reading.
        current: RwLock<Arc<Principals>>,
    },
}

/// The caller of a request, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Open or shared-token mode: every role; the body says who acts.
    Trusted,
    /// Principals mode: this principal.
    Principal(Principal),
    /// The board's session calling the API: the caller it signed in as, but only for what
    /// the board does (read, approve, reject, answer escalations). The session's cookie and
    /// CSRF token are on the board's pages, so they are not made a way to everything the
    /// person's token may do.
    Board(Box<Caller>),
}

impl Caller {
    /// Whether the caller may do `action`; a refusal names the role it needs.
    pub fn may(&self, action: Action) -> Result<(), ApiError> {
        match self {
            Caller::Trusted => Ok(()),
            Caller::Principal(principal) => principal.may(action).map_err(ApiError::RoleNeeded),
            // What the board does is what a reviewer may do.
            Caller::Board(signed_in) if Role::Reviewer.permits(action) => signed_in.may(action),
            Caller::Board(_) => Err(ApiError::Forbidden(
                "the board's session reads, approves, rejects and answers escalations; \
                 anything else needs a token in Authorization"
                    .into(),
            )),
        }
    }

    /// The principal, in principals mode.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Principal(principal) => Some(principal),
            Caller::Trusted => None,
            Caller::Board(signed_in) => signed_in.principal(),
        }
    }
}

impl Auth {
    /// The mode the settings choose: principals if a file is given (read now; a bad file
    /// stops start-up), else a shared token if one is set and not empty, else open.
    pub fn new(token: Option<Secret>, file: Option<PathBuf>) -> Result<Self, PrincipalsError> {
        if let Some(file) = file {
            let principals = Principals::load(&file)?;
            return Ok(Auth::Principals {
                file,
                current: RwLock::new(Arc::new(principals)),
            });
        }
        Ok(match token.filter(|t| !t.expose().is_empty()) {
            Some(token) => Auth::Shared(token),
            None => Auth::Open,
        })
    }

    /// Whether requests need a bearer token.
    pub fn required(&self) -> bool {
        !matches!(self, Auth::Open)
    }

    /// Whether principals decide who acts.
    pub fn principals(&self) -> bool {
        matches!(self, Auth::Principals { .. })
    }

    /// The caller a request's `Authorization` header names, or 401. The scheme's name is
    /// read in any case (`Bearer`, `bearer`), as HTTP has it. Two `Authorization` headers
    /// name no one (401): which of them a proxy in between would have honoured is unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.required()
            && headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .nth(1)
                .is_some()
        {
            return Err(ApiError::TwoAuthorizations);
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or_default();
        self.check_token(given)
    }

    /// The SHA-256 (hex) of the bearer token `headers` carry, to find its principal again
    /// later with [`Auth::principal_with_token_hash`]; `None` without one.
    pub fn token_sha256(headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)?;
        Some(crate::principals::to_hex(&crate::principals::token_hash(
            token,
        )))
    }

    /// The caller `token` makes (the board's sign-in), or 401.
    pub fn check_token(&self, given: &str) -> Result<Caller, ApiError> {
        match self {
            Auth::Open => Ok(Caller::Trusted),
            Auth::Shared(expected) => {
                // Digests of equal length: comparing the tokens themselves would end early
                // on a length that differs, telling a guesser the token's length.
                let given = crate::principals::token_hash(given);
                let expected = crate::principals::token_hash(expected.expose());
                if bool::from(given.ct_eq(&expected)) {
                    Ok(Caller::Trusted)
                } else {
                    Err(ApiError::Unauthorized)
                }
            }
            // No token is no one, whatever hash the file holds (the SHA-256 of an empty token
            // is refused when the file loads; this holds even if it were not).
            Auth::Principals { .. } if given.is_empty() => Err(ApiError::Unauthorized),
            Auth::Principals { current, .. } => {
                let principals = current
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone();
                // Looked up by the token's SHA-256: no comparison runs over the token itself.
                principals
                    .find(given)
                    .cloned()
                    .map(Caller::Principal)
                    .ok_or(ApiError::Unauthorized)
            }
        }
    }

    /// The principal whose token has this SHA-256 (hex) in the file's last good reading
    /// (principals mode only): a board session holds only while the token that made it does.
    pub fn principal_with_token_hash(&self, hex: &str) -> Option<Principal> {
        self.reading()?.with_token_hash(hex).cloned()
    }

    /// The principal named `name` in the file's last good reading (principals mode only).
    pub fn principal_named(&self, name: &Actor) -> Option<Principal> {
        self.reading()?.named(name).cloned()
    }

    /// The file's last good reading, in principals mode.
    fn reading(&self) -> Option<Arc<Principals>> {
        let Auth::Principals { current, .. } = self else {
            return None;
        };
        Some(
            current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }

    /// Re-reads the principals file; a file that cannot be read or is malformed keeps the
    /// principals in force, and the log says why. Nothing to do in the other modes.
    pub fn reload(&self) {
        let Auth::Principals { file, current } = self else {
            return;
        };
        match Principals::load(file) {
            Ok(principals) => {
                let changes = current
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .changes_to(&principals);
                tracing::info!(
                    principals = principals.len(),
                    added = ?changes.added,
                    removed = ?changes.removed,
                    token_changed = ?changes.token_changed,
                    rights_changed = ?changes.rights_changed,
                    file = %file.display(),
                    "principals reloaded"
                );
                if !changes.admins_added.is_empty() {
                    // Who may override a gate: worth a look whenever it grows.
                    tracing::warn!(
                        admins = ?changes.admins_added,
                        file = %file.display(),
                        "principals given the admin role"
                    );
                }
                *current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(principals);
            }
            Err(e) => {
                tracing::error!(error = %e, "principals file not reloaded; the previous one stays in force");
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme in any case, and the
/// spaces and tabs around the token dropped (a token holds neither), as the board's sign-in
/// drops them from a pasted token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim_matches([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("BEARER s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
        assert_eq!(bearer_token("Bearer  s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("Bearer \ts3cret"), Some("s3cret"));
    }
}
