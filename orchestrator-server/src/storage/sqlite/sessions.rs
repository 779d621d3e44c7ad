//! The SQLite side of board sessions: writes on the writer thread, the read on the pool.

use diesel::prelude::*;
use diesel::result::QueryResult;
use orchestrator_core::RepositoryError;

use crate::storage::schema::board_sessions;
use crate::storage::sessions::{SessionBackend, SessionRow, SessionWrite};
use crate::storage::write::{Write, Written};

/// Carries out a session write inside the writer's transaction.
pub fn apply(conn: &mut SqliteConnection, write: &SessionWrite) -> QueryResult<Written> {
    let count = |n: usize| Written::Count(u64::try_from(n).unwrap_or(0));
    match write {
        SessionWrite::Create(row) => diesel::insert_into(board_sessions::table)
            .values(row)
            .execute(conn)
            .map(|_| Written::Done),
        SessionWrite::Delete(id) => {
            diesel::delete(board_sessions::table.filter(board_sessions::id_sha256.eq(id)))
                .execute(conn)
                .map(count)
        }
        SessionWrite::Purge(before) => {
            diesel::delete(board_sessions::table.filter(board_sessions::expires_at.lt(before)))
                .execute(conn)
                .map(count)
        }
    }
}

#[async_trait::async_trait]
impl SessionBackend for super::SqliteRepository {
    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        super::SqliteRepository::write(self, write).await
    }

    async fn session_row(&self, id_sha256: &str) -> Result<Option<SessionRow>, RepositoryError> {
        let id = id_sha256.to_owned();
        self.readers
            .run(move |conn| {
                board_sessions::table
                    .find(&id)
                    .select(SessionRow::as_select())
                    .get_result(conn)
                    .optional()
            })
            .await
    }
}
