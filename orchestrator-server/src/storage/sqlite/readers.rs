//! The reading connections: a fixed set opened at start-up, each read run on a blocking thread
//! so the async workers never wait for SQLite. A read of a WAL database never waits for the
//! writer; a read that cannot get a connection within [`POOL_WAIT`](crate::storage) answers
//! `Unavailable` instead of queueing without bound.

use std::sync::{Arc, Mutex, MutexGuard};

use diesel::{QueryResult, SqliteConnection};
use orchestrator_core::RepositoryError;
use tokio::sync::Semaphore;

use crate::storage::stats::InUse;
use crate::storage::{POOL_WAIT, StorageMetrics, classify};

/// Idle reading connections and the permits to take one.
pub struct Readers {
    idle: Mutex<Vec<SqliteConnection>>,
    /// One permit per connection: holding one guarantees an idle connection to take.
    permits: Arc<Semaphore>,
    metrics: Arc<StorageMetrics>,
}

/// A connection lent to one read. It goes back to the idle set when dropped — after the read,
/// and also if the read panicked or the request waiting for it was dropped — and only then is
/// its permit released, so there are never more permits than connections. It counts as in use
/// as long: a read whose caller gave up still holds its connection.
struct Lent {
    conn: Option<SqliteConnection>,
    readers: Arc<Readers>,
    _in_use: InUse,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.idle().push(conn);
        }
    }
}

impl Readers {
    /// Readers over connections already opened and configured.
    pub fn new(connections: Vec<SqliteConnection>, metrics: Arc<StorageMetrics>) -> Self {
        Readers {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
            metrics,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<SqliteConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `read` on a connection, on a blocking thread.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut SqliteConnection) -> QueryResult<T> + Send + 'static,
    ) -> Result<T, RepositoryError> {
        let busy =
            || RepositoryError::Unavailable("no database connection was free in time".into());
        let asked = std::time::Instant::now();
        let permit = tokio::time::timeout(POOL_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                self.metrics.pool_timeouts.inc();
                busy()
            })?
            .map_err(|_| busy())?;
        let conn = self.idle().pop().ok_or_else(busy)?;
        let mut lent = Lent {
            conn: Some(conn),
            readers: self.clone(),
            _in_use: InUse::take(&self.metrics, asked.elapsed()),
            _permit: permit,
        };
        let result = tokio::task::spawn_blocking(move || match lent.conn.as_mut() {
            Some(conn) => read(conn),
            None => Err(diesel::result::Error::BrokenTransactionManager),
        })
        .await
        .map_err(|e| RepositoryError::Backend(Box::new(e)))?;
        result.map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::{Connection, RunQueryDsl};

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_whose_caller_gives_up_still_returns_its_connection() {
        let conn = SqliteConnection::establish(":memory:").unwrap();
        let readers = Arc::new(Readers::new(
            vec![conn],
            Arc::new(StorageMetrics::default()),
        ));
        // The caller gives up while its read still runs (a request deadline, a health probe's
        // timeout).
        let slow = readers.run(|conn| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
        });
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), slow)
                .await
                .is_err()
        );
        // Still in use while the read runs, though its caller is gone.
        assert_eq!(readers.metrics.pool_in_use.get(), 1);
        // The one connection is back for the next read once the first finished.
        let next = readers
            .run(|conn| diesel::sql_query("SELECT 1").execute(conn).map(|_| ()))
            .await;
        assert!(next.is_ok(), "{next:?}");
        assert_eq!(readers.metrics.pool_in_use.get(), 0);
    }
}
