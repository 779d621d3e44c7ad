//! Durable storage with diesel: `SqliteRepository` (the default, one file) and `PgRepository`
//! (several replicas on one database), both implementing the core's `WorkflowRepository`.
//!
//! Only this module imports diesel, and it translates every database failure into core's
//! `RepositoryError` in one place (`classify`).
//!
//! How it is laid out, so that a new table or query touches each back end once:
//! - `schema` (the tables, as `diesel print-schema` writes them) and `models` (rows and their
//!   conversions to core types) serve both back ends.
//! - `queries` builds every query once, independent of the back end; `write` describes every
//!   write once (`write::Write`) with what it decided (`write::Written`).
//! - `sqlite` and `postgres` run them: each has a plain function per query and one `apply`
//!   per write, blocking for SQLite (reads on a bounded pool of blocking threads, writes on
//!   the writer thread that commits whatever is waiting as one transaction) and async for
//!   PostgreSQL (a pool; concurrent commits share one statement and one transaction).
//!
//! SQLite: WAL journal, `synchronous=FULL` (a commit is on disk before it is acknowledged), a
//! busy timeout, foreign keys on. PostgreSQL: tokio-postgres through diesel-async (no libpq,
//! no OpenSSL); several server processes may share the database: the compare-and-set on the
//! version and the history's primary key keep every transition single, and start-up migrations
//! take an advisory lock.

mod models;
pub mod postgres;
mod queries;
pub mod schema;
pub mod sessions;
pub mod sqlite;
mod stats;
pub mod webhooks;
mod write;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::{RepositoryError, Transition, Workflow, WorkflowRepository};

pub use postgres::PgRepository;
pub use sessions::{BoardSession, SessionRepository};
pub use sqlite::SqliteRepository;
pub use stats::StorageMetrics;
pub use webhooks::{AttemptRecord, Backlog, ClaimRoom, DueDelivery, WebhookRepository};

/// How long a request waits for a pooled connection before the store counts as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// A durable store: the core's repository contract, and what only a durable store offers
/// (webhooks and the board's sessions among it).
#[async_trait]
pub trait DurableRepository: WorkflowRepository + WebhookRepository + SessionRepository {
    /// Stores many new workflows with their first transitions in one transaction, for seeding
    /// and imports: all of them, or none if any feature id exists already.
    async fn import(&self, items: &[(Workflow, Transition)]) -> Result<(), RepositoryError>;

    /// The store's metrics: connection pool use and waits, writes per commit.
    fn metrics(&self) -> &StorageMetrics;

    /// Whether this store's server is the only one on its database, so that every ask it
    /// finds under way at start-up was left by a server that stopped: on SQLite (one server
    /// per file). Never on PostgreSQL, where replicas share the database: there, a store that
    /// finds no other session connected as it opens the database (a running replica, whatever
    /// its version, keeps connections open; so may a tool, which only makes the answer a
    /// cautious no) fails the asks left under way itself, under the migrations' lock, which a
    /// replica starting meanwhile waits for before it can make one.
    fn sole_server(&self) -> bool;
}

/// Opens the store `url` names (creating a SQLite file's directory when missing) and runs the
/// embedded migrations. `pool_size` is the number of reading connections (SQLite) or of all
/// connections (PostgreSQL).
///
/// PostgreSQL migrations need tokio's multi-thread runtime.
pub async fn connect(
    url: &DatabaseUrl,
    pool_size: usize,
) -> Result<Arc<dyn DurableRepository>, StorageError> {
    Ok(match url {
        DatabaseUrl::SqliteFile(path) => Arc::new(SqliteRepository::open(path, pool_size).await?),
        DatabaseUrl::SqliteMemory => Arc::new(SqliteRepository::temporary(pool_size).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PgRepository::connect(url, pool_size).await?),
    })
}

/// Where the data lives, parsed from `DATABASE_URL`. `Debug` and `Display` never show a
/// PostgreSQL URL (it may carry a password).
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file: `sqlite:///relative/path`, `sqlite:////absolute/path`, `sqlite:path`.
    SqliteFile(PathBuf),
    /// `sqlite::memory:`: a private database gone when the store is dropped (kept in a
    /// temporary file, unsynced, since the writer and the readers must share it).
    SqliteMemory,
    /// A PostgreSQL server: `postgres://…` or `postgresql://…`.
    Postgres(String),
}

/// A `DATABASE_URL` that names no supported database. It shows the URL only when it holds no
/// `@` (a PostgreSQL URL may carry a password before it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported database url '{0}': expected sqlite:///relative, sqlite:////absolute, sqlite::memory: or postgres://…{1}"
)]
pub struct BadDatabaseUrl(String, String);

impl BadDatabaseUrl {
    fn new(url: &str, rule: impl Into<String>) -> Self {
        let shown = if url.contains('@') { "…" } else { url };
        BadDatabaseUrl(shown.to_owned(), rule.into())
    }

    /// Why it was refused beyond its form, if anything (it holds no part of the URL), with a
    /// leading space: ` (SQLite takes no parameters: …)`.
    pub fn rule(&self) -> &str {
        &self.1
    }
}

impl FromStr for DatabaseUrl {
    type Err = BadDatabaseUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = || BadDatabaseUrl::new(url, "");
        // A line end or space pasted with it would be part of a file's name, or of the
        // database's.
        if url.trim() != url {
            return Err(BadDatabaseUrl::new(
                url,
                " (with no space or line end around it)",
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A typo (a port past 65535, an option the driver does not know) is a bad setting,
            // said now, not a connection that fails at start-up.
            postgres::check_url(url)
                .map_err(|why| BadDatabaseUrl::new(url, format!(" (PostgreSQL: {why})")))?;
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
        if path.contains('?') {
            // `?mode=ro` and the like would be dropped: the file is opened read-write.
            let rule = " (SQLite takes no parameters: the server sets its own)";
            return Err(BadDatabaseUrl::new(url, rule));
        }
        if path.is_empty() || path.ends_with('/') {
            return Err(bad());
        }
        Ok(DatabaseUrl::SqliteFile(PathBuf::from(path)))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::SqliteFile(path) => f.debug_tuple("SqliteFile").field(path).finish(),
            DatabaseUrl::SqliteMemory => f.write_str("SqliteMemory"),
            DatabaseUrl::Postgres(_) => f.write_str("Postgres(\"postgres://…\")"),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::SqliteFile(path) => write!(f, "sqlite:///{}", path.display()),
            DatabaseUrl::SqliteMemory => f.write_str("sqlite::memory:"),
            // Never a password: user, hosts, ports and database only.
            DatabaseUrl::Postgres(url) => f.write_str(&postgres::shown(url)),
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

/// Sorts a diesel failure into the two answers a caller can give: the store failed
/// ([`RepositoryError::Unavailable`], HTTP 503 — a lost or refused connection, a disk that is
/// full, a read-only file, a lock held too long, an administrator's shutdown, a timeout), or
/// the code asked for something impossible ([`RepositoryError::Backend`], HTTP 500 — a
/// violated constraint no rule expected, a row that does not decode, a query that cannot be
/// built, a table or column the schema lacks). Only the second is a bug, or a schema that is
/// not this build's; what else the database reports is the first, which a retry may get past.
pub(crate) fn classify(error: diesel::result::Error) -> orchestrator_core::RepositoryError {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    use orchestrator_core::RepositoryError;
    let bug = match &error {
        Error::DatabaseError(Kind::Unknown, info) => not_in_schema(info.message()),
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

/// Says so when the database holds migrations this build does not have: a newer build
/// migrated it (a rolling upgrade under way, or a downgrade). This one still runs: the
/// migrations only add, and the replicas of an upgrade run side by side for a while.
fn warn_of_unknown_migrations<DB: diesel::backend::Backend>(
    harness: &mut impl diesel_migrations::MigrationHarness<DB>,
    known: &diesel_migrations::EmbeddedMigrations,
) {
    use diesel::migration::MigrationSource;
    let (Ok(applied), Ok(known)) = (
        harness.applied_migrations(),
        MigrationSource::<DB>::migrations(known),
    ) else {
        return;
    };
    let unknown: Vec<String> = applied
        .iter()
        .filter(|version| !known.iter().any(|m| m.name().version() == **version))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            versions = unknown.join(", "),
            "the database was migrated by a newer build than this one, which does not know \
             these migrations; it runs, as the replicas of an upgrade do, but a downgrade is \
             not undone: see Upgrading in docs/OPERATIONS.md"
        );
    }
}

/// Whether a database's message says a statement named what the schema lacks: a table, a
/// column, a function or (PostgreSQL) an operator for the types given. No retry gets past
/// that (SQLite: `no such table`, `no such column`, `table … has no column named …`, `no such
/// function`; PostgreSQL, in English: `relation "…" does not exist`, `column "…" does not
/// exist`, `function … does not exist`, `operator does not exist: …`). What else does not
/// exist (a database, a role, a prepared statement a pooler lost) may come back: not this.
fn not_in_schema(message: &str) -> bool {
    message.starts_with("no such table")
        || message.starts_with("no such column")
        || message.starts_with("no such function")
        || message.starts_with("operator does not exist")
        || message.contains(" has no column named ")
        || (["relation ", "column ", "function "]
            .iter()
            .any(|kind| message.starts_with(kind))
            && message.ends_with(" does not exist"))
}

/// The time written by a write probe (Unix microseconds).
fn probe_time() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Runs blocking start-up work (opening files, migrating) off the async threads.
async fn blocking<T: Send + 'static>(
    task: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(task)
        .await
        .map_err(|e| StorageError::Connect(format!("start-up task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};
    use orchestrator_core::RepositoryError;
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    use std::path::Path;

    fn classified(kind: DatabaseErrorKind, message: &str) -> RepositoryError {
        super::classify(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    /// A statement naming what the schema lacks is no outage a retry gets past (it was 503
    /// `DATABASE_UNAVAILABLE`, and kept SQLite's health at 503); what the database reports
    /// otherwise is.
    #[test]
    fn a_schema_that_lacks_a_column_is_no_outage() {
        for message in [
            "no such column: webhook_deliveries.redeliveries",
            "no such table: board_sessions",
            "table board_sessions has no column named credential",
            "column webhook_deliveries.redeliveries does not exist",
            "relation \"board_sessions\" does not exist",
            "function take_event_ids(integer) does not exist",
            "no such function: take_event_ids",
            "operator does not exist: text = bigint",
        ] {
            let error = classified(DatabaseErrorKind::Unknown, message);
            assert!(matches!(error, RepositoryError::Backend(_)), "{message}");
        }
        for message in [
            "database is locked",
            "disk I/O error",
            "database or disk is full",
            "terminating connection due to administrator command",
            "the database system is starting up",
            "database \"orchestrator\" does not exist",
            "role \"orchestrator\" does not exist",
            "schema \"public\" does not exist",
            "prepared statement \"s3\" does not exist",
            "cursor \"c1\" does not exist",
            "type \"gate_policy\" does not exist",
        ] {
            let error = classified(DatabaseErrorKind::Unknown, message);
            assert!(
                matches!(error, RepositoryError::Unavailable(_)),
                "{message}"
            );
        }
        let unique = classified(DatabaseErrorKind::UniqueViolation, "duplicate key");
        assert!(matches!(unique, RepositoryError::Backend(_)));
    }

    /// Every file under `dir`, as paths relative to `root`, sorted.
    fn files(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // An editor's or a file manager's leftovers (`.up.sql.swp`, `.DS_Store`) are no
            // migration's: diesel reads only `up.sql` and `down.sql`.
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                files(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
        found.sort();
    }

    /// A migration, once committed, is never edited: diesel records only which versions ran,
    /// so a database that ran the old text would never run the new one and would lack what it
    /// adds for ever. `migrations.sha256` (`sha256sum` format: `cd migrations && sha256sum -c
    /// ../migrations.sha256`) holds every committed file's digest; a change is a new migration,
    /// whose lines are added to that file.
    #[test]
    fn committed_migrations_are_never_edited() {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = crate_dir.join("migrations");
        let locked = std::fs::read_to_string(crate_dir.join("migrations.sha256")).unwrap();
        let mut found = Vec::new();
        files(&root, &root, &mut found);
        let mut now = String::new();
        for file in &found {
            let digest = Sha256::digest(std::fs::read(root.join(file)).unwrap());
            let hex = digest.iter().fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
            let _ = writeln!(now, "{hex}  {file}");
        }
        for line in locked.lines() {
            assert!(
                now.lines().any(|current| current == line),
                "migration file {} was edited or removed after it was committed: write a new \
                 migration instead (a database that ran it will never run it again)",
                line.split_once("  ").map_or(line, |(_, file)| file)
            );
        }
        let new: Vec<&str> = now
            .lines()
            .filter(|current| !locked.lines().any(|line| line == *current))
            .collect();
        assert!(
            new.is_empty(),
            "new migration files: add these lines to orchestrator-server/migrations.sha256 \
             with the commit that adds them:\n{}",
            new.join("\n")
        );
    }
}
