//! `SqliteRepository`: the repository contract in one SQLite file.
//!
//! Reads run on a bounded pool of connections opened at start-up, each read on a blocking
//! thread (never on the async workers); a read that waits too long for a connection answers
//! `Unavailable`. Every write goes to the writer thread (`writer`), which commits whatever is
//! waiting as one transaction — group commit — and answers each caller only after the sync.
//! An advance is read and judged there too, inside that transaction: one hand-off instead of a
//! read and then a write, and never a lost compare-and-set.

mod ops;
mod prepared;
mod readers;
mod sessions;
mod webhooks;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use orchestrator_core::consultation::ConsultationError;
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{
    Consultation, ConsultationId, Expiry, FeatureId, Judge, OverdueNote, RepositoryError,
    StateCounts, Timestamp, Transition, Version, Workflow, WorkflowRepository, WorkflowState,
};
use orchestrator_core::{EventFilter, EventSlice, IdempotencyKey, KeyClaim, Receipt};

use super::models::{self, micros, to_i64};
use super::write::{Write, Written};
use super::{DurableRepository, StorageError, StorageMetrics, blocking, probe_time};
use readers::Readers;
use writer::{Task, Writer};

pub use writer::WAL_RESET_BYTES;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// How long a write that failed because of the storage keeps the health check (`ping`)
/// failing, though the probe's own write succeeds.
pub const WRITE_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Page cache of the writing connection, in KiB. The operating system caches the file too;
/// this bounds the process's memory however large the database grows.
const WRITER_CACHE_KIB: u32 = 1024;
/// Page cache of each reading connection (and the checkpoint thread's), in KiB. A reader's
/// cache is emptied whenever it starts reading after a commit, so under writes it serves one
/// read only; measured with a million workflows stored, 256 KiB instead of 1 MiB took peak
/// RSS at 32 clients from 31.6 to 23.0 MiB with reads and advances as fast.
const READER_CACHE_KIB: u32 = 256;

/// Most gates one statement reads the blockers of (SQLite bounds a statement's parameters).
const GATES_PER_READ: usize = 1000;

/// Workflows, their histories and consultations in one SQLite file.
#[derive(Clone)]
pub struct SqliteRepository {
    /// Reading connections; with WAL they never wait for the writer.
    readers: Arc<Readers>,
    /// The one writing connection's thread.
    writer: Writer,
    /// The directory of a temporary store, removed with the last handle.
    _scratch: Option<Arc<tempfile::TempDir>>,
    metrics: Arc<StorageMetrics>,
}

impl std::fmt::Debug for SqliteRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRepository").finish_non_exhaustive()
    }
}

/// Why the file at `target` did not open, or not with its settings: on a read-only mount, in
/// a directory this process may not write to, or on a full disk, SQLite cannot make its
/// write-ahead log's files beside it and says only that it cannot open the file or that a disk
/// operation failed; said as the database that cannot be written, and why, when its directory
/// refuses a new file (or a page of one) for any of those reasons.
fn not_opened(target: &str, error: &impl std::fmt::Display) -> StorageError {
    not_written(target, error).unwrap_or_else(|| StorageError::Connect(error.to_string()))
}

/// The database that cannot be written, and why, when its directory refuses a new file (or a
/// page of one): a read-only file system, no permission, a full disk or a used-up quota;
/// `None` when the directory takes one (the trouble is elsewhere).
fn not_written(target: &str, error: &impl std::fmt::Display) -> Option<StorageError> {
    use std::io::{ErrorKind, Write};
    let directory = std::path::Path::new(target)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let written = tempfile::tempfile_in(directory).and_then(|mut file| {
        file.write_all(&[0; 4096])?;
        file.sync_all()
    });
    let why = match written.map_err(|e| e.kind()) {
        Err(ErrorKind::ReadOnlyFilesystem) => "is on a read-only file system",
        Err(ErrorKind::PermissionDenied) => "may not be written to by this process",
        Err(ErrorKind::StorageFull) => "is on a disk with no space left",
        Err(ErrorKind::QuotaExceeded) => "is on a disk whose quota this process has used up",
        _ => return None,
    };
    Some(StorageError::NotWritable(format!(
        "{error}: its directory {} {why}",
        directory.display()
    )))
}

/// Creates `dir` and its missing parents, on Unix for this user alone (mode 0700): the
/// database holds the webhooks' signing secrets. A directory that exists is left as it is.
pub(crate) fn private_directory(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the database file when it is missing, on Unix readable and writable by this user
/// alone (mode 0600; SQLite gives its write-ahead log's files the database's mode). A file
/// that exists is left as it is; one that cannot be made is for SQLite to report.
fn private_file(path: &Path) {
    let _ = private_file_options()
        .write(true)
        .create_new(true)
        .open(path);
}

/// Options whose file, if they create one, is on Unix readable and writable by this user
/// alone (mode 0600).
pub(crate) fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Per-connection settings of every connection, readers and writer alike; `cache_kib` is the
/// connection's page cache.
fn pragmas(durable: bool, cache_kib: u32) -> String {
    format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {};
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -{cache_kib};
         PRAGMA journal_size_limit = {WAL_RESET_BYTES};",
        if durable { "FULL" } else { "OFF" }
    )
}

/// The journal mode SQLite keeps for the connection's database.
fn journal_mode(conn: &mut SqliteConnection) -> diesel::QueryResult<String> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    diesel::sql_query("PRAGMA journal_mode")
        .get_result::<Mode>(conn)
        .map(|m| m.journal_mode)
}

impl SqliteRepository {
    /// Opens (or creates) the database file at `path`, creating its directory when missing,
    /// runs the embedded migrations, checks that it accepts writes, and opens `readers`
    /// reading connections.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use orchestrator_core::Orchestrator;
    /// use orchestrator_server::storage::SqliteRepository;
    ///
    /// let repository = SqliteRepository::open("data/orchestrator.db", 4).await?;
    /// let orchestrator = Orchestrator::new(Arc::new(repository));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open(path: impl AsRef<Path>, readers: usize) -> Result<Self, StorageError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_directory(dir).map_err(|source| StorageError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        private_file(path);
        let target = path.to_string_lossy().into_owned();
        blocking(move || Self::start(&target, readers, true, None)).await
    }

    /// A private database that disappears with the store (`sqlite::memory:`): kept in a
    /// temporary file, unsynced, since the writer and the readers must share it.
    pub async fn temporary(readers: usize) -> Result<Self, StorageError> {
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
        blocking(move || Self::start(&target, readers, false, scratch)).await
    }

    fn start(
        target: &str,
        readers: usize,
        durable: bool,
        scratch: Option<Arc<tempfile::TempDir>>,
    ) -> Result<Self, StorageError> {
        let connect = |cache_kib| -> Result<SqliteConnection, StorageError> {
            let mut conn =
                SqliteConnection::establish(target).map_err(|e| not_opened(target, &e))?;
            conn.batch_execute(&pragmas(durable, cache_kib))
                .map_err(|e| not_opened(target, &e))?;
            Ok(conn)
        };
        let mut conn = connect(WRITER_CACHE_KIB)?;
        // A file system that cannot share memory between processes (some network and overlay
        // mounts) keeps the rollback journal without a word: readers would then hold up every
        // commit. Said at start-up instead.
        let mode = journal_mode(&mut conn).map_err(|e| StorageError::Connect(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Connect(format!(
                "the database file cannot keep a write-ahead log on its file system (SQLite \
                 kept journal mode '{mode}'); put it on a local disk"
            )));
        }
        conn.run_pending_migrations(MIGRATIONS).map_err(|e| {
            not_written(target, &e).unwrap_or_else(|| StorageError::Migrate(e.to_string()))
        })?;
        super::warn_of_unknown_migrations(&mut conn, &MIGRATIONS);
        // A database that opens and migrates may still refuse writes (a read-only file or
        // mount, a full disk): find out now rather than at the first request.
        conn.transaction(|conn| {
            let mut ids = ops::EventIds::read(conn)?;
            ops::apply(conn, &mut ids, &Write::Probe(probe_time()))
        })
        .map_err(|e| {
            not_written(target, &e).unwrap_or_else(|| StorageError::NotWritable(e.to_string()))
        })?;
        let checkpointer = connect(READER_CACHE_KIB)?;
        let wal = std::path::PathBuf::from(format!("{target}-wal"));
        let metrics = Arc::new(StorageMetrics::default());
        let writer = Writer::start(conn, checkpointer, wal, metrics.clone())
            .map_err(|e| StorageError::Connect(e.to_string()))?;
        let readers = (0..readers.max(1))
            .map(|_| connect(READER_CACHE_KIB))
            .collect::<Result<Vec<_>, _>>()?;
        metrics
            .pool_size
            .set(i64::try_from(readers.len()).unwrap_or(i64::MAX));
        Ok(SqliteRepository {
            readers: Arc::new(Readers::new(readers, metrics.clone())),
            writer,
            _scratch: scratch,
            metrics,
        })
    }

    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        self.writer.submit(Task::Write(write)).await?.into_result()
    }
}

#[async_trait]
impl DurableRepository for SqliteRepository {
    async fn import(&self, items: &[(Workflow, Transition)]) -> Result<(), RepositoryError> {
        self.write(models::import(items)).await.map(|_| ())
    }

    fn sole_server(&self) -> bool {
        true
    }

    fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }
}

#[async_trait]
impl WorkflowRepository for SqliteRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id()))]
    async fn create_with(
        &self,
        workflow: &Workflow,
        first: &Transition,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let write = Write::create(workflow, first, receipt);
        self.write(write).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn get(&self, feature_id: &FeatureId) -> Result<Workflow, RepositoryError> {
        let id = feature_id.to_string();
        let row = self.readers.run(move |conn| ops::get(conn, &id)).await?;
        models::workflow(feature_id, row)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(
        &self,
        state: Option<WorkflowState>,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let after = after.map(ToString::to_string).unwrap_or_default();
        let rows = self
            .readers
            .run(move |conn| ops::page(conn, state, &after, i64::from(limit)))
            .await?;
        models::convert(rows)
    }

    async fn summary(&self) -> Result<StateCounts, RepositoryError> {
        let rows = self.readers.run(ops::state_counts).await?;
        models::state_counts(rows)
    }

    async fn list_overdue(
        &self,
        now: Timestamp,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let after = after.map(ToString::to_string).unwrap_or_default();
        let now = micros(now);
        let rows = self
            .readers
            .run(move |conn| ops::overdue_page(conn, now, &after, i64::from(limit)))
            .await?;
        models::convert(rows)
    }

    async fn gates_by_due(&self, limit: u32) -> Result<Vec<Workflow>, RepositoryError> {
        let rows = self
            .readers
            .run(move |conn| ops::gates_by_due(conn, i64::from(limit)))
            .await?;
        models::convert(rows)
    }

    async fn count_overdue(&self, now: Timestamp) -> Result<u64, RepositoryError> {
        let now = micros(now);
        let n = self
            .readers
            .run(move |conn| ops::overdue_count(conn, now))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn unnoted_overdue(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let now = micros(now);
        models::decodable_overdue(limit, |asked| {
            self.readers
                .run(move |conn| ops::unnoted_overdue(conn, now, asked))
        })
        .await
    }

    async fn note_overdue(
        &self,
        note: &OverdueNote,
        expiry: Option<Expiry<'_>>,
    ) -> Result<bool, RepositoryError> {
        let write = Write::note_overdue(note, expiry);
        self.write(write).await.map(|written| written.count() == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn history(&self, feature_id: &FeatureId) -> Result<Vec<Transition>, RepositoryError> {
        let id = feature_id.to_string();
        let rows = self
            .readers
            .run(move |conn| ops::history(conn, &id))
            .await?;
        models::history(feature_id, rows)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id(), expected_version))]
    async fn commit_with(
        &self,
        expected_version: Version,
        workflow: &Workflow,
        transition: &Transition,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let write = Write::commit(expected_version, workflow, transition, receipt);
        self.write(write).await.map(|_| ())
    }

    /// Read, judged and written in one task of the writer thread: the judge sees the workflow
    /// as the writes before it in the same batch left it.
    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn advance(
        &self,
        feature_id: &FeatureId,
        judge: Judge,
    ) -> Result<Workflow, orchestrator_core::Error> {
        let task = Task::Advance(feature_id.clone(), judge);
        self.writer.submit(task).await?.into_advanced()
    }

    async fn claim_key(
        &self,
        key: &IdempotencyKey,
        fingerprint: &str,
        now: Timestamp,
        lease_until: Timestamp,
        expired_before: Timestamp,
    ) -> Result<KeyClaim, RepositoryError> {
        let write = Write::claim_key(key, fingerprint, now, lease_until, expired_before);
        self.write(write).await?.into_claim()
    }

    async fn answer_key(&self, receipt: &Receipt) -> Result<(), RepositoryError> {
        let write = Write::AnswerKey(receipt.into());
        self.write(write).await.map(|_| ())
    }

    async fn release_key(
        &self,
        key: &IdempotencyKey,
        lease_until: Timestamp,
    ) -> Result<(), RepositoryError> {
        let write = Write::ReleaseKey(key.scope.clone(), key.key.clone(), micros(lease_until));
        self.write(write).await.map(|_| ())
    }

    async fn forget_unanswered_keys(&self) -> Result<u64, RepositoryError> {
        Ok(self.write(Write::ForgetUnansweredKeys).await?.count())
    }

    async fn purge_keys(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let purge = || Write::PurgeKeys(micros(before));
        crate::storage::write::purge_in_chunks(purge, |write| self.write(write)).await
    }

    async fn events(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<EventSlice, RepositoryError> {
        let filter = filter.clone();
        let read = self
            .readers
            .run(move |conn| ops::events(conn, to_i64(after), &filter, i64::from(limit)))
            .await?;
        models::event_slice(read)
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let purge = || Write::PurgeEvents(micros(before));
        crate::storage::write::purge_in_chunks(purge, |write| self.write(write)).await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.readers.run(ops::ping).await?;
        // Reads alone would say "ok" while every write fails (a full disk, a read-only file)
        // or while the writer thread is gone.
        self.write(Write::Probe(probe_time())).await?;
        // The probe's one row can still fit where larger writes fail (a nearly full disk).
        match self.writer.failed_within(WRITE_FAILURE_WINDOW) {
            Some((ago, message)) => Err(RepositoryError::Unavailable(
                format!("a write failed {} s ago: {message}", ago.as_secs()).into(),
            )),
            None => Ok(()),
        }
    }

    /// Waits for the writes already accepted, then empties the write-ahead log into the
    /// database file and joins the writer's threads, so a clean stop leaves no log behind.
    async fn close(&self) {
        let writer = self.writer.clone();
        let _ = tokio::task::spawn_blocking(move || writer.shutdown()).await;
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError> {
        let id = feature_id.to_string();
        let found = self
            .readers
            .run(move |conn| ops::hub_session(conn, &id))
            .await?;
        let session = found.ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))?;
        Ok(session.map(HubSessionId))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn swap_hub_session(
        &self,
        feature_id: &FeatureId,
        expected: Option<&HubSessionId>,
        new: &HubSessionId,
    ) -> Result<HubSessionId, RepositoryError> {
        let write = Write::swap_session(feature_id, expected, new);
        self.write(write).await?.into_session(feature_id)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn add_consultation_with(
        &self,
        consultation: &Consultation,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let write = Write::add_consultation(consultation, true, receipt);
        self.write(write).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn reserve_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError> {
        let write = Write::add_consultation(consultation, false, None);
        self.write(write).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn drop_reservation(
        &self,
        feature_id: &FeatureId,
        id: ConsultationId,
    ) -> Result<(), RepositoryError> {
        let write = Write::DropReservation(id.to_string());
        self.write(write).await.map(|_| ())
    }

    async fn interrupt_asks(
        &self,
        asked_before: Timestamp,
        error: &ConsultationError,
        at: Timestamp,
    ) -> Result<u64, RepositoryError> {
        let write = Write::interrupt_asks(asked_before, error, at);
        self.write(write).await.map(|written| written.count())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn update_consultation_with(
        &self,
        consultation: &Consultation,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let write = Write::update_consultation(consultation, receipt);
        self.write(write).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>, RepositoryError> {
        let id = feature_id.to_string();
        let rows = self
            .readers
            .run(move |conn| ops::consultations(conn, &id))
            .await?;
        models::convert(rows)
    }

    async fn gate_blockers(
        &self,
        feature_ids: &[FeatureId],
    ) -> Result<Vec<Consultation>, RepositoryError> {
        if feature_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = feature_ids.iter().map(FeatureId::to_string).collect();
        let rows = self
            .readers
            .run(move |conn| {
                // In chunks, each well within SQLite's bound on a statement's parameters.
                let mut rows = Vec::new();
                for chunk in ids.chunks(GATES_PER_READ) {
                    rows.extend(ops::gate_blockers(
                        conn,
                        chunk.iter().map(String::as_str).collect(),
                    )?);
                }
                Ok(rows)
            })
            .await?;
        let mut blockers = models::convert(rows)?;
        // Oldest first across the chunks too.
        blockers.sort_by_key(|c: &Consultation| (c.created_at, c.id));
        Ok(blockers)
    }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::{BigInt, Text};
    use diesel::sqlite::Sqlite;
    use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
    use diesel_migrations::MigrationHarness;

    use super::MIGRATIONS;
    use crate::storage::queries;

    #[derive(QueryableByName)]
    struct Step {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    /// SQLite's plan for `query` (its text as diesel writes it, every parameter bound to `n`).
    fn plan(
        conn: &mut SqliteConnection,
        query: &impl diesel::query_builder::QueryFragment<Sqlite>,
        n: i64,
    ) -> String {
        let written = diesel::debug_query::<Sqlite, _>(query).to_string();
        let sql = written.split(" -- binds:").next().unwrap_or_default();
        let mut explain = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}")).into_boxed();
        for _ in 0..sql.matches('?').count() {
            explain = explain.bind::<BigInt, _>(n);
        }
        let steps: Vec<Step> = explain.load(conn).unwrap();
        steps
            .into_iter()
            .map(|s| s.detail)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A database in memory with every migration run.
    fn migrated() -> SqliteConnection {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        conn
    }

    /// A purge of settled deliveries reads the index that holds only them, never stepping over
    /// pending deliveries older than its cut (a receiver that stays down leaves many).
    #[test]
    fn the_purge_of_settled_deliveries_reads_the_settled_index() {
        let mut conn = migrated();
        let end = plan(&mut conn, &queries::deliveries_chunk_end(5), 5);
        assert!(end.contains("webhook_deliveries_settled"), "{end}");
        let delete = plan(
            &mut conn,
            &diesel::delete(queries::settled_deliveries_before(5)),
            5,
        );
        assert!(delete.contains("webhook_deliveries_settled"), "{delete}");
    }

    /// A chunk of a webhook's deletion reads that webhook's deliveries through its index, in
    /// order, not every delivery kept.
    #[test]
    fn a_chunk_of_a_webhooks_deletion_reads_its_index() {
        let mut conn = migrated();
        let end = plan(&mut conn, &queries::deliveries_chunk_end_of("wh_1"), 5);
        assert!(end.contains("USING COVERING INDEX"), "{end}");
        assert!(!end.contains("TEMP B-TREE"), "{end}");
        let delete = plan(
            &mut conn,
            &diesel::delete(queries::deliveries_of_through("wh_1", 5)),
            5,
        );
        assert!(delete.contains("USING"), "{delete}");
    }

    /// A chunk of a webhook's deletion is the webhook's first ten thousand deliveries (by
    /// event), not all of them, and none of another webhook's.
    #[test]
    fn a_chunk_of_a_webhooks_deletion_is_ten_thousand_of_its_deliveries() {
        use crate::storage::schema::webhook_deliveries;
        use diesel::connection::SimpleConnection;
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
        let mut conn = migrated();
        conn.batch_execute(
            "INSERT INTO webhooks (id, url, event_types, description, secret, created_at, enqueued_through)
             VALUES ('wh_busy', 'http://127.0.0.1:9/', '[]', NULL, 's', 0, 0),
                    ('wh_quiet', 'http://127.0.0.1:9/', '[]', NULL, 's', 0, 0);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10003)
             INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status,
                                             attempts, created_at, schedule_from, redeliveries)
             SELECT 'msg_' || i, CASE WHEN i % 2 = 0 THEN 'wh_quiet' ELSE 'wh_busy' END, i,
                    'workflow.transitioned', '{}', 'delivered', 1, i, 0, 0 FROM n;
             WITH RECURSIVE n(i) AS (SELECT 10004 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status,
                                             attempts, created_at, schedule_from, redeliveries)
             SELECT 'msg_' || i, 'wh_busy', i, 'workflow.transitioned', '{}', 'delivered', 1, i,
                    0, 0 FROM n;",
        )
        .unwrap();
        let end: Option<i64> = queries::deliveries_chunk_end_of("wh_busy")
            .get_result(&mut conn)
            .optional()
            .unwrap();
        // wh_busy holds the 5 002 odd events up to 10 003, then every one from 10 004: its
        // 10 000th is event 15 001.
        assert_eq!(end, Some(15_001));
        let deleted = diesel::delete(queries::deliveries_of_through("wh_busy", 15_001))
            .execute(&mut conn)
            .unwrap();
        assert_eq!(deleted, 10_000);
        let quiet: i64 = webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq("wh_quiet"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(quiet, 5_001);
    }

    /// The minute sweep of reservations a stopped server left reads the few reservations by
    /// age, not every consultation (on the writer, which every write waits for).
    #[test]
    fn the_sweep_of_reservations_reads_their_index() {
        let mut conn = migrated();
        let delete = plan(
            &mut conn,
            &diesel::delete(queries::reservations_before(5)),
            5,
        );
        assert!(delete.contains("consultations_reserved"), "{delete}");
    }

    /// A claim reads only the due deliveries, through the partial indexes that hold the
    /// pending ones, not all of a webhook's deliveries (a day of them, on the writer, five
    /// times a second).
    #[test]
    fn a_claim_reads_the_due_indexes() {
        let mut conn = migrated();
        let any = plan(
            &mut conn,
            &diesel::select(diesel::dsl::exists(queries::due_deliveries(5))),
            5,
        );
        assert!(any.contains("webhook_deliveries_due "), "{any}");
        let of = plan(&mut conn, &queries::due_of(5, "wh_1", 5), 5);
        assert!(of.contains("webhook_deliveries_due_by_webhook"), "{of}");
        assert!(!of.contains("TEMP B-TREE"), "{of}");
        // The backlog gauge's read too, each scrape.
        let earliest = plan(&mut conn, &queries::earliest_live_due(5), 5);
        assert!(
            earliest.contains("USING INDEX webhook_deliveries_due"),
            "{earliest}"
        );
        assert!(!earliest.contains("SCAN webhook_deliveries"), "{earliest}");
    }
}
