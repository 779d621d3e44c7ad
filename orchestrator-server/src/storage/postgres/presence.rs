//! Which servers run on one PostgreSQL database, as far as start-up needs to know it: whether
//! any other server does.
//!
//! Each server holds a shared advisory lock ([`PRESENCE_LOCK`]) on a connection of its own for
//! as long as it runs (PostgreSQL releases it when the connection ends, however the server
//! ended). A server starting takes the lock exclusively if it can, which it can only when no
//! other server holds it: then every ask it finds under way was left by a stopped server and
//! is failed at once, as on SQLite, instead of only those older than any live ask could be.
//! While it holds the lock exclusively, other servers starting wait before they go on, so none
//! starts an ask that the sweep would take for a left-over one.

use std::time::Duration;

use diesel::sql_types::Bool;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{StorageError, with_timeouts};

/// Key of the advisory lock every running server holds shared.
pub const PRESENCE_LOCK: i64 = 0x6f72_6368_7072; // "orchpr"

/// How often the presence's connection is checked, and how long after its loss another try
/// to take it again is made: a server starting while this server's presence is lost (the
/// database restarted) would take it for stopped and fail its asks under way.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Longest a server starting waits for another that started alone to finish its recovery.
const JOIN_WAIT: &str = "60s";

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// A presence being taken at start-up; [`Joining::hold`] holds it for the server's life.
pub struct Joining {
    url: String,
    conn: AsyncPgConnection,
    /// No other server holds the presence lock: every ask under way is a stopped server's.
    pub alone: bool,
}

/// This server's presence on the database, held until dropped.
pub struct Presence {
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        // The connection goes with the task, and PostgreSQL releases the lock with it.
        self.keeper.abort();
    }
}

/// Opens the presence's own connection.
async fn connect(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    AsyncPgConnection::establish(&with_timeouts(url)).await
}

/// Runs `sql`, which answers one boolean named `locked` (or none: then `true`).
async fn run(conn: &mut AsyncPgConnection, sql: &str) -> diesel::QueryResult<bool> {
    let rows: Vec<Locked> = diesel::sql_query(sql).load(conn).await?;
    Ok(<[Locked]>::first(&rows).is_none_or(|row| row.locked))
}

impl Joining {
    /// Joins the servers on the database at `url`: alone (the lock taken exclusively), or
    /// beside others (the lock taken shared, after waiting for any server that is recovering
    /// alone).
    pub async fn join(url: &str) -> Result<Joining, StorageError> {
        let fail = |e: String| StorageError::Connect(format!("presence: {e}"));
        let mut conn = connect(url).await.map_err(|e| fail(e.to_string()))?;
        diesel::sql_query(format!("SET statement_timeout = '{JOIN_WAIT}'"))
            .execute(&mut conn)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let alone = run(
            &mut conn,
            &format!("SELECT pg_try_advisory_lock({PRESENCE_LOCK}) AS locked"),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        if !alone {
            run(
                &mut conn,
                &format!("SELECT pg_advisory_lock_shared({PRESENCE_LOCK}), true AS locked"),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        }
        Ok(Joining {
            url: url.to_owned(),
            conn,
            alone,
        })
    }

    /// Holds the presence shared for the server's life (letting go of the exclusive lock of a
    /// server that started alone, once its recovery is done), and takes it again after its
    /// connection is lost.
    pub async fn hold(mut self) -> Result<Presence, StorageError> {
        if self.alone {
            // Shared first, then the exclusive lock let go: in between this session holds
            // both, so no server starting meanwhile finds the lock free.
            for sql in [
                format!("SELECT pg_advisory_lock_shared({PRESENCE_LOCK}), true AS locked"),
                format!("SELECT pg_advisory_unlock({PRESENCE_LOCK}) AS locked"),
            ] {
                run(&mut self.conn, &sql)
                    .await
                    .map_err(|e| StorageError::Connect(format!("presence: {e}")))?;
            }
        }
        let keeper = tokio::spawn(keep(self.url, self.conn));
        Ok(Presence { keeper })
    }
}

/// Checks the presence's connection every [`CHECK_EVERY`]; when it is lost, connects again and
/// takes the lock shared again, until it is dropped.
async fn keep(url: String, conn: AsyncPgConnection) {
    let mut conn = Some(conn);
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        match conn.as_mut() {
            Some(held) => {
                let alive = tokio::time::timeout(CHECK_EVERY, run(held, "SELECT true AS locked"));
                if !matches!(alive.await, Ok(Ok(_))) {
                    tracing::warn!(
                        "this server's presence on the database was lost; taking it again (a server starting meanwhile would take this one's asks under way for left-overs)"
                    );
                    conn = None;
                }
            }
            None => {
                let again = async {
                    let mut fresh = connect(&url).await.ok()?;
                    let shared =
                        format!("SELECT pg_advisory_lock_shared({PRESENCE_LOCK}), true AS locked");
                    run(&mut fresh, &shared).await.ok()?;
                    Some(fresh)
                };
                if let Ok(Some(fresh)) = tokio::time::timeout(CHECK_EVERY, again).await {
                    tracing::info!("this server's presence on the database is held again");
                    conn = Some(fresh);
                }
            }
        }
    }
}
