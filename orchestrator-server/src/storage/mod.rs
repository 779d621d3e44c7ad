//! Durable storage with diesel: the database URL forms, connection pools with per-connection
//! settings, embedded migrations, and `DieselWorkflowRepository`.
//!
//! Only this module imports diesel. It translates every database failure into core's
//! `RepositoryError`.
//!
//! SQLite: WAL journal, `synchronous=FULL` (a commit is on disk before it is acknowledged),
//! a busy timeout, foreign keys on. Readers share a pool; every write goes through one
//! dedicated connection, so writers queue in the process instead of spinning on SQLite's lock.
//!
//! PostgreSQL: tokio-postgres through diesel-async (no libpq, no OpenSSL), one pool. Several
//! server processes may share the database: the compare-and-set in `commit` and the history's
//! primary key keep every transition single, and start-up migrations take an advisory lock.

mod models;
mod repo;
pub mod schema;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use repo::DieselWorkflowRepository;
use repo::Pools;

/// The SQLite connection as diesel-async pools it.
type SqliteConn = SyncConnectionWrapper<SqliteConnection>;
type SqlitePool = Pool<SqliteConn>;
type PgPool = Pool<AsyncPgConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Key of the advisory lock replicas take while migrating, so only one migrates at a time.
const MIGRATION_LOCK: i64 = 0x6f72_6368_6573; // "orches"

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;
/// How long a request waits for a pooled connection before the store counts as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Where the data lives, parsed from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file: `sqlite:///relative/path`, `sqlite:////absolute/path`, `sqlite:path`.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database: `sqlite::memory:`; gone when the process ends.
    SqliteMemory,
    /// A PostgreSQL server: `postgres://…` or `postgresql://…`.
    Postgres(String),
}

/// A `DATABASE_URL` that names no supported database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported database url '{0}': expected sqlite:///relative, sqlite:////absolute, sqlite::memory: or postgres://…"
)]
pub struct BadDatabaseUrl(String);

impl FromStr for DatabaseUrl {
    type Err = BadDatabaseUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = || BadDatabaseUrl(url.to_owned());
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        let rest = url.strip_prefix("sqlite:").ok_or_else(bad)?;
        if rest == ":memory:" || rest == "//:memory:" || rest == "///:memory:" {
            return Ok(DatabaseUrl::SqliteMemory);
        }
        // `sqlite:///x` is the relative path `x`; `sqlite:////x` the absolute path `/x`.
        let path = rest
            .strip_prefix("//")
            .map_or(rest, |r| r.strip_prefix('/').unwrap_or(r));
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path.ends_with('/') {
            return Err(bad());
        }
        Ok(DatabaseUrl::SqliteFile(PathBuf::from(path)))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::SqliteFile(path) => write!(f, "sqlite:///{}", path.display()),
            DatabaseUrl::SqliteMemory => f.write_str("sqlite::memory:"),
            // Never print a password.
            DatabaseUrl::Postgres(_) => f.write_str("postgres://…"),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The SQLite file's directory could not be created.
    #[error("cannot create database directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A connection could not be opened or configured.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// Migrations failed.
    #[error("database migrations failed: {0}")]
    Migrate(String),
}

/// Opens the store `url` names, creating a SQLite file's directory when missing, and runs the
/// embedded migrations. `pool_size` bounds the reading connections (SQLite) or all connections
/// (PostgreSQL).
///
/// PostgreSQL migrations need tokio's multi-thread runtime.
pub async fn connect(
    url: &DatabaseUrl,
    pool_size: usize,
) -> Result<DieselWorkflowRepository, StorageError> {
    match url {
        DatabaseUrl::SqliteFile(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StorageError::Directory {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let target = path.to_string_lossy().into_owned();
            let write = sqlite_pool(&target, 1)?;
            migrate(&write).await?;
            let read = sqlite_pool(&target, pool_size.max(1))?;
            Ok(DieselWorkflowRepository::new(Pools::Sqlite { read, write }))
        }
        DatabaseUrl::SqliteMemory => {
            // Each connection to ":memory:" is its own database: keep exactly one.
            let pool = sqlite_pool(":memory:", 1)?;
            migrate(&pool).await?;
            Ok(DieselWorkflowRepository::new(Pools::Sqlite {
                read: pool.clone(),
                write: pool,
            }))
        }
        DatabaseUrl::Postgres(url) => {
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url.as_str());
            let pool = Pool::builder(manager)
                .max_size(pool_size.max(1))
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(POOL_WAIT))
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .map_err(|e| StorageError::Connect(e.to_string()))?;
            migrate_postgres(&pool).await?;
            Ok(DieselWorkflowRepository::new(Pools::Postgres(pool)))
        }
    }
}

/// Runs the PostgreSQL migrations under an advisory lock, so replicas starting together take
/// turns and the later ones find nothing to do.
async fn migrate_postgres(pool: &PgPool) -> Result<(), StorageError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut *conn)
        .await
        .map_err(|e| StorageError::Migrate(e.to_string()))?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let migrated = harness
        .run_pending_migrations(POSTGRES_MIGRATIONS)
        .map(|_| ())
        .map_err(|e| StorageError::Migrate(e.to_string()));
    let mut conn = harness.into_inner();
    let unlocked = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(&mut *conn)
        .await;
    migrated?;
    unlocked.map_err(|e| StorageError::Migrate(e.to_string()))?;
    Ok(())
}

fn sqlite_pool(target: &str, size: usize) -> Result<SqlitePool, StorageError> {
    let mut config = ManagerConfig::<SqliteConn>::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;"
            ))
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(target, config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Connect(e.to_string()))
}

async fn migrate(pool: &SqlitePool) -> Result<(), StorageError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    conn.spawn_blocking(|conn| {
        conn.run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|_| ())
            .map_err(diesel::result::Error::QueryBuilderError)
    })
    .await
    .map_err(|e| StorageError::Migrate(e.to_string()))
}
