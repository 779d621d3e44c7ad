//! Durable storage with diesel: the database URL forms, connection pools with per-connection
//! settings, embedded migrations, and `DieselWorkflowRepository`.
//!
//! Only this module imports diesel. It translates every database failure into core's
//! `RepositoryError`.
//!
//! SQLite: WAL journal, `synchronous=FULL` (a commit is on disk before it is acknowledged),
//! a busy timeout, foreign keys on. Reads run inline on plain connections (`readers`) and never
//! wait for writes; every write goes to the writer thread (`writer`), which commits whatever is
//! waiting as one transaction — group commit — and answers each caller only after the sync.
//!
//! PostgreSQL: tokio-postgres through diesel-async (no libpq, no OpenSSL), one pool. Several
//! server processes may share the database: the compare-and-set in `commit` and the history's
//! primary key keep every transition single, and start-up migrations take an advisory lock.

mod models;
mod ops;
mod readers;
mod repo;
pub mod schema;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::sync::Arc;

pub use repo::DieselWorkflowRepository;
use repo::Pools;

type PgPool = Pool<AsyncPgConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Key of the advisory lock replicas take while migrating, so only one migrates at a time.
const MIGRATION_LOCK: i64 = 0x6f72_6368_6573; // "orches"

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;
/// How long a request waits for a pooled connection before the store counts as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Longest a PostgreSQL statement may run, enforced by the server (`statement_timeout`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a PostgreSQL operation may take seen from here, network included: a stalled
/// connection is given up (and discarded) after this, and the request answers 503.
const QUERY_TIMEOUT: Duration = Duration::from_secs(8);

/// Where the data lives, parsed from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file: `sqlite:///relative/path`, `sqlite:////absolute/path`, `sqlite:path`.
    SqliteFile(PathBuf),
    /// `sqlite::memory:`: a private database gone when the store is dropped (kept in a
    /// temporary file, unsynced, since the writer and the readers must share it).
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
    /// The database opened but refuses writes.
    #[error("the database cannot be written: {0}")]
    NotWritable(String),
}

/// The time written by a write probe (Unix microseconds).
fn probe_time() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Page cache of each SQLite connection, in KiB. The operating system caches the file too;
/// this bounds the process's memory however large the database grows.
const PAGE_CACHE_KIB: u32 = 1024;

/// Size the WAL file is cut back to after a checkpoint resets it.
const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Per-connection settings of every SQLite connection, readers and writer alike.
fn sqlite_pragmas(durable: bool) -> String {
    format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {};
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -{PAGE_CACHE_KIB};
         PRAGMA journal_size_limit = {WAL_LIMIT_BYTES};",
        if durable { "FULL" } else { "OFF" }
    )
}

/// Opens the SQLite database at `target`: the writer thread on its own connection (which runs
/// the migrations first), and a pool of `readers`.
fn open_sqlite(
    target: &str,
    readers: usize,
    durable: bool,
    scratch: Option<Arc<tempfile::TempDir>>,
) -> Result<DieselWorkflowRepository, StorageError> {
    let mut conn =
        SqliteConnection::establish(target).map_err(|e| StorageError::Connect(e.to_string()))?;
    conn.batch_execute(&sqlite_pragmas(durable))
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    conn.run_pending_migrations(SQLITE_MIGRATIONS)
        .map_err(|e| StorageError::Migrate(e.to_string()))?;
    // A database that opens and migrates may still refuse writes (a read-only file or mount,
    // a full disk): find out now rather than at the first request.
    conn.transaction(|conn| ops::sqlite::apply(conn, &ops::Write::Probe(probe_time())))
        .map_err(|e| StorageError::NotWritable(e.to_string()))?;
    let checkpointer =
        SqliteConnection::establish(target).map_err(|e| StorageError::Connect(e.to_string()))?;
    let wal = PathBuf::from(format!("{target}-wal"));
    let writer = writer::Writer::start(conn, checkpointer, wal)
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    let readers = readers::Readers::new(target.to_owned(), sqlite_pragmas(durable), readers);
    Ok(DieselWorkflowRepository::new(Pools::Sqlite {
        readers: Arc::new(readers),
        writer,
        _scratch: scratch,
    }))
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
            blocking(move || open_sqlite(&target, pool_size, true, None)).await
        }
        DatabaseUrl::SqliteMemory => {
            // Each connection to ":memory:" would be a database of its own, and the writer and
            // the readers must share one: use a private file that disappears with the store.
            let scratch = tempfile::TempDir::new().map_err(|source| StorageError::Directory {
                path: std::env::temp_dir(),
                source,
            })?;
            let target = scratch
                .path()
                .join("memory.db")
                .to_string_lossy()
                .into_owned();
            let scratch = Some(Arc::new(scratch));
            blocking(move || open_sqlite(&target, pool_size, false, scratch)).await
        }
        DatabaseUrl::Postgres(url) => {
            let mut config = ManagerConfig::<AsyncPgConnection>::default();
            // Skip the test query on every checkout (a round trip per request); a connection
            // the server closed fails its next query, answers 503, and the pool discards it.
            config.recycling_method = RecyclingMethod::Fast;
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                with_timeouts(url),
                config,
            );
            let pool = Pool::builder(manager)
                .max_size(pool_size.max(1))
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(POOL_WAIT))
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .map_err(|e| StorageError::Connect(e.to_string()))?;
            migrate_postgres(&pool).await?;
            let repository = DieselWorkflowRepository::new(Pools::Postgres(pool));
            repository
                .probe_write()
                .await
                .map_err(|e| StorageError::NotWritable(e.to_string()))?;
            Ok(repository)
        }
    }
}

/// Sorts a diesel failure into the two answers a caller can give: the store failed
/// ([`RepositoryError::Unavailable`], HTTP 503 — a lost or refused connection, a disk that is
/// full, a read-only file, a lock held too long, an administrator's shutdown, a timeout), or
/// the code asked for something impossible ([`RepositoryError::Backend`], HTTP 500 — a
/// violated constraint no rule expected, a row that does not decode, a query that cannot be
/// built). Only the second is a bug; everything the database itself reports is the first.
pub(crate) fn classify(error: diesel::result::Error) -> orchestrator_core::RepositoryError {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    use orchestrator_core::RepositoryError;
    let bug = match &error {
        Error::DatabaseError(kind, _) => matches!(
            kind,
            Kind::UniqueViolation
                | Kind::ForeignKeyViolation
                | Kind::NotNullViolation
                | Kind::CheckViolation
                | Kind::RestrictViolation
                | Kind::ExclusionViolation
        ),
        Error::QueryBuilderError(_)
        | Error::DeserializationError(_)
        | Error::SerializationError(_)
        | Error::InvalidCString(_)
        | Error::NotFound
        | Error::AlreadyInTransaction
        | Error::NotInTransaction => true,
        _ => false,
    };
    if bug {
        RepositoryError::Backend(Box::new(error))
    } else {
        RepositoryError::Unavailable(Box::new(error))
    }
}

/// Runs blocking start-up work (opening files, migrating) off the async threads.
async fn blocking<T: Send + 'static>(
    task: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(task)
        .await
        .map_err(|e| StorageError::Connect(format!("start-up task failed: {e}")))?
}

/// The PostgreSQL URL with the connection's time bounds added, unless the operator set them:
/// a connect timeout, TCP keepalives and a user timeout (so a dead peer is noticed), and a
/// server-side statement timeout.
fn with_timeouts(url: &str) -> String {
    let mut url = url.to_owned();
    let statement_ms = STATEMENT_TIMEOUT.as_millis();
    let params = [
        ("connect_timeout", "5".to_owned()),
        ("keepalives_idle", "10".to_owned()),
        ("keepalives_interval", "5".to_owned()),
        ("tcp_user_timeout", "15000".to_owned()),
        (
            "options",
            format!("-c%20statement_timeout%3D{statement_ms}"),
        ),
    ];
    for (name, value) in params {
        let present = url
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p.split('=').next() == Some(name)));
        if !present {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(name);
            url.push('=');
            url.push_str(&value);
        }
    }
    url
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_are_added_to_a_postgres_url_unless_set() {
        let url = with_timeouts("postgres://u@h/db");
        assert!(
            url.starts_with("postgres://u@h/db?connect_timeout=5&"),
            "{url}"
        );
        assert!(
            url.contains("options=-c%20statement_timeout%3D5000"),
            "{url}"
        );
        let own = with_timeouts("postgres://u@h/db?connect_timeout=1&sslmode=disable");
        assert!(
            own.contains("connect_timeout=1&sslmode=disable&keepalives_idle"),
            "{own}"
        );
        assert_eq!(own.matches("connect_timeout").count(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_sessions_carry_the_statement_timeout() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        let mut conn =
            <AsyncPgConnection as diesel_async::AsyncConnection>::establish(&with_timeouts(&url))
                .await
                .expect("TEST_DATABASE_URL is reachable");
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            statement_timeout: String,
        }
        let setting: Setting = diesel::sql_query("SHOW statement_timeout")
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(setting.statement_timeout, "5s");
    }
}
