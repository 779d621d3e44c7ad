//! The SQLite reading connections: plain blocking connections, used inline on the calling
//! thread. A read of a WAL database never waits for a lock and takes microseconds, far less
//! than handing it to another thread and back; prepared statements stay cached per
//! connection. Writes, which sync to disk, go to the writer thread instead.

use std::sync::{Mutex, MutexGuard};

use diesel::connection::SimpleConnection;
use diesel::{Connection, QueryResult, SqliteConnection};
use orchestrator_core::RepositoryError;

/// Idle reading connections of one database, opened on demand.
pub struct Readers {
    target: String,
    pragmas: String,
    /// Connections kept between reads; more are opened when all are in use.
    idle: Mutex<Vec<SqliteConnection>>,
    keep: usize,
}

impl Readers {
    /// Readers of the database at `target`, each set up with `pragmas`, keeping up to `keep`.
    pub fn new(target: String, pragmas: String, keep: usize) -> Self {
        Readers {
            target,
            pragmas,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<SqliteConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> Result<SqliteConnection, RepositoryError> {
        let mut conn = SqliteConnection::establish(&self.target)
            .map_err(|e| RepositoryError::Unavailable(Box::new(e)))?;
        conn.batch_execute(&self.pragmas)
            .map_err(|e| RepositoryError::Unavailable(Box::new(e)))?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (or a new one) and puts the connection back.
    pub fn with<T>(
        &self,
        read: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Result<QueryResult<T>, RepositoryError> {
        let taken = self.idle().pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&mut conn);
        let mut idle = self.idle();
        if idle.len() < self.keep {
            idle.push(conn);
        }
        Ok(result)
    }
}
