//! The PostgreSQL side of board sessions: each write in a transaction of its own.

use diesel::prelude::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel::result::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orchestrator_core::RepositoryError;

use crate::storage::schema::board_sessions;
use crate::storage::sessions::{SessionBackend, SessionRow, SessionWrite};
use crate::storage::write::{Write, Written};

/// Carries out a session write inside the caller's transaction.
pub async fn apply(conn: &mut AsyncPgConnection, write: &SessionWrite) -> QueryResult<Written> {
    let count = |n: usize| Written::Count(u64::try_from(n).unwrap_or(0));
    match write {
        SessionWrite::Create(row) => diesel::insert_into(board_sessions::table)
            .values(row)
            .execute(conn)
            .await
            .map(|_| Written::Done),
        SessionWrite::Delete(id) => {
            diesel::delete(board_sessions::table.filter(board_sessions::id_sha256.eq(id)))
                .execute(conn)
                .await
                .map(count)
        }
        SessionWrite::Purge(before) => {
            diesel::delete(board_sessions::table.filter(board_sessions::expires_at.lt(before)))
                .execute(conn)
                .await
                .map(count)
        }
    }
}

#[async_trait::async_trait]
impl SessionBackend for super::PgRepository {
    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        super::PgRepository::write(self, write).await
    }

    async fn session_row(&self, id_sha256: &str) -> Result<Option<SessionRow>, RepositoryError> {
        self.run(async |conn| {
            board_sessions::table
                .find(id_sha256)
                .select(SessionRow::as_select())
                .get_result(conn)
                .await
                .optional()
        })
        .await
    }
}
