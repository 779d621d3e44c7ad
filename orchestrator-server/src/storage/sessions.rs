//! The reviewer board's sessions in the store, so that every replica knows every session and
//! signing out on one ends it on all.
//!
//! A session is found by the SHA-256 of the id its cookie carries; the id itself is never
//! stored. An expired session is as good as absent; housekeeping purges the rows.

use async_trait::async_trait;
use diesel::{Insertable, Queryable, Selectable};
use orchestrator_core::{RepositoryError, Timestamp};

use super::models::micros;
use super::schema::board_sessions;
use super::write::{Write, Written};

/// A signed-in browser of the reviewer board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSession {
    /// SHA-256 (hex) of the cookie's session id.
    pub id_sha256: String,
    /// Who the session acts as: a principal's name, or the name given at sign-in.
    pub actor: String,
    /// What signed it in (`principal:` or `shared:` and the token's SHA-256 in hex, or
    /// `open`): the session holds only while that credential does.
    pub credential: String,
    /// The token the page sends back with each write (CSRF defence).
    pub csrf: String,
    /// When it began.
    pub created_at: Timestamp,
    /// When it ends.
    pub expires_at: Timestamp,
}

/// The board's sessions: what a durable store keeps for `/board`.
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// Stores a new session.
    async fn create_session(&self, session: &BoardSession) -> Result<(), RepositoryError>;

    /// The session with this id hash, if it has not ended by `now`.
    async fn session(
        &self,
        id_sha256: &str,
        now: Timestamp,
    ) -> Result<Option<BoardSession>, RepositoryError>;

    /// Ends a session; false if there was none.
    async fn delete_session(&self, id_sha256: &str) -> Result<bool, RepositoryError>;

    /// Forgets the sessions that ended before `before`.
    async fn purge_sessions(&self, before: Timestamp) -> Result<u64, RepositoryError>;
}

/// A session as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = board_sessions)]
pub(crate) struct SessionRow {
    pub id_sha256: String,
    pub actor: String,
    pub credential: String,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl From<&BoardSession> for SessionRow {
    fn from(session: &BoardSession) -> Self {
        SessionRow {
            id_sha256: session.id_sha256.clone(),
            actor: session.actor.clone(),
            credential: session.credential.clone(),
            csrf: session.csrf.clone(),
            created_at: micros(session.created_at),
            expires_at: micros(session.expires_at),
        }
    }
}

/// A stored time; one out of range (never written by us) reads as the epoch, long ended.
fn from_micros(micros: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

impl From<SessionRow> for BoardSession {
    fn from(row: SessionRow) -> Self {
        BoardSession {
            id_sha256: row.id_sha256,
            actor: row.actor,
            credential: row.credential,
            csrf: row.csrf,
            created_at: from_micros(row.created_at),
            expires_at: from_micros(row.expires_at),
        }
    }
}

/// Every session write, for the back ends' `apply`; each answers `Count` but `Create`.
#[derive(Debug)]
pub(crate) enum SessionWrite {
    /// A new session.
    Create(SessionRow),
    /// Ends the session with this id hash.
    Delete(String),
    /// Forgets sessions that ended before these Unix microseconds.
    Purge(i64),
}

/// What each back end gives the session store: its way of writing, and the one read. The
/// [`SessionRepository`] methods are written once, over it.
#[async_trait]
pub(crate) trait SessionBackend: Send + Sync {
    /// Carries out a write.
    async fn write(&self, write: Write) -> Result<Written, RepositoryError>;
    /// The session row with this id hash, ended or not.
    async fn session_row(&self, id_sha256: &str) -> Result<Option<SessionRow>, RepositoryError>;
}

#[async_trait]
impl<B: SessionBackend> SessionRepository for B {
    async fn create_session(&self, session: &BoardSession) -> Result<(), RepositoryError> {
        let write = SessionWrite::Create(SessionRow::from(session));
        self.write(Write::BoardSession(write)).await.map(|_| ())
    }

    async fn session(
        &self,
        id_sha256: &str,
        now: Timestamp,
    ) -> Result<Option<BoardSession>, RepositoryError> {
        let row = self.session_row(id_sha256).await?;
        Ok(row
            .filter(|row| row.expires_at > micros(now))
            .map(BoardSession::from))
    }

    async fn delete_session(&self, id_sha256: &str) -> Result<bool, RepositoryError> {
        let write = SessionWrite::Delete(id_sha256.to_owned());
        Ok(self.write(Write::BoardSession(write)).await?.count() > 0)
    }

    async fn purge_sessions(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let write = SessionWrite::Purge(micros(before));
        Ok(self.write(Write::BoardSession(write)).await?.count())
    }
}
