//! The reading connections: a fixed set opened at start-up, each read run on a blocking thread
//! so the async workers never wait for SQLite. A read of a WAL database never waits for the
//! writer; a read that cannot get a connection within [`POOL_WAIT`](crate::storage) answers
//! `Unavailable` instead of queueing without bound.

use std::sync::{Mutex, MutexGuard};

use diesel::{QueryResult, SqliteConnection};
use orchestrator_core::RepositoryError;
use tokio::sync::Semaphore;

use crate::storage::stats::InUse;
use crate::storage::{POOL_WAIT, StorageMetrics, classify};

/// Idle reading connections and the permits to take one.
pub struct Readers {
    idle: Mutex<Vec<SqliteConnection>>,
    /// One permit per connection: holding one guarantees an idle connection to take.
    permits: Semaphore,
    metrics: std::sync::Arc<StorageMetrics>,
}

impl Readers {
    /// Readers over connections already opened and configured.
    pub fn new(
        connections: Vec<SqliteConnection>,
        metrics: std::sync::Arc<StorageMetrics>,
    ) -> Self {
        Readers {
            permits: Semaphore::new(connections.len()),
            idle: Mutex::new(connections),
            metrics,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<SqliteConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `read` on a connection, on a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut SqliteConnection) -> QueryResult<T> + Send + 'static,
    ) -> Result<T, RepositoryError> {
        let busy =
            || RepositoryError::Unavailable("no database connection was free in time".into());
        let asked = std::time::Instant::now();
        let _permit = tokio::time::timeout(POOL_WAIT, self.permits.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let _in_use = InUse::take(&self.metrics, asked.elapsed());
        let mut conn = self.idle().pop().ok_or_else(busy)?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = read(&mut conn);
            (conn, result)
        })
        .await
        .map_err(|e| RepositoryError::Backend(Box::new(e)))?;
        self.idle().push(conn);
        result.map_err(classify)
    }
}
