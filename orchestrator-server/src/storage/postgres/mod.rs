//! `PgRepository`: the repository contract on PostgreSQL, for several replicas on one
//! database.
//!
//! One pool; every operation has a time bound (`QUERY_TIMEOUT`, and a `statement_timeout`
//! on the server), and a connection that timed out or failed is taken out of the pool, so a
//! lost or restarted database is recovered from without restarting the service. Concurrent
//! advances share one statement and one transaction (`commits`), and so do concurrent
//! creations (`creates`); every other write runs in a transaction of its own.

mod commits;
mod creates;
mod ops;
mod recent;
mod sessions;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{Error as DieselError, QueryResult};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use orchestrator_core::consultation::ConsultationError;
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{
    Consultation, ConsultationId, Expiry, FeatureId, Judge, OverdueNote, RepositoryError,
    StateCounts, Timestamp, Transition, Version, Workflow, WorkflowRepository, WorkflowState,
};
use orchestrator_core::{EventFilter, EventSlice, IdempotencyKey, KeyClaim, Receipt};

use super::models::{self, micros, to_i64};
use super::stats::InUse;
use super::write::{Write, Written};
use super::{DurableRepository, POOL_WAIT, StorageError, StorageMetrics, classify, probe_time};
use commits::Committer;
use creates::Creation;
use deadpool::managed::{Hook, HookError};
use recent::Recent;

type PgPool = Pool<AsyncPgConnection>;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Key of the advisory lock replicas take while migrating, so only one migrates at a time (a
/// replica starting while another holds it waits).
pub const MIGRATION_LOCK: i64 = 0x6f72_6368_6573; // "orches"
/// Longest a statement may run, enforced by the server (`statement_timeout`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a transaction may wait for its client between statements, enforced by the
/// server (`idle_in_transaction_session_timeout`): a replica that lost its connection
/// mid-transaction (a partition, a stalled proxy) would otherwise hold its locks — the event
/// log's among them, so every replica's writes — until the server's TCP keepalive noticed,
/// hours later. Below `STATEMENT_TIMEOUT`: the other replicas' writes waiting on those locks
/// then go on late, instead of being cancelled (503) while they wait. Every transaction sends
/// its next statement as soon as the last is answered; none waits on anything else between.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a migration waits for a table's lock (`lock_timeout`) before it is rolled back and
/// tried again: while it waits, every other session's statements on that table queue behind
/// it, so a migration held up by a long transaction or a backup stalls the running replicas
/// for this long at a time, not for as long as the transaction lasts.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(2);
/// How many times the migrations are tried when a lock wait ran out, a second apart (about
/// three minutes in all) before start-up fails.
const MIGRATION_TRIES: u32 = 60;
/// How many writes a replica tries at start-up before it says the database is not writable.
const START_PROBES: u32 = 3;
/// Longest an operation may take seen from here, network included: a stalled connection is
/// given up (and discarded) after this, and the request answers 503.
const QUERY_TIMEOUT: Duration = Duration::from_secs(8);

/// Workflows, their histories and consultations in a PostgreSQL database.
#[derive(Clone)]
pub struct PgRepository {
    pool: PgPool,
    commits: Committer,
    metrics: Arc<StorageMetrics>,
}

impl std::fmt::Debug for PgRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRepository").finish_non_exhaustive()
    }
}

impl PgRepository {
    /// Connects to the database `url` names (`postgres://…`) with a pool of `pool_size`
    /// connections, runs the embedded migrations under an advisory lock (so replicas may start
    /// together), and checks that it accepts writes.
    ///
    /// Migrations need tokio's multi-thread runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use orchestrator_core::Orchestrator;
    /// use orchestrator_server::storage::PgRepository;
    ///
    /// let repository = PgRepository::connect("postgres://orchestrator@db/orchestrator", 16).await?;
    /// let orchestrator = Orchestrator::new(Arc::new(repository));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StorageError> {
        let recent = Arc::new(Recent::default());
        let pool = pool(url, pool_size, recent.clone())?;
        migrate(&pool).await?;
        let metrics = Arc::new(StorageMetrics::default());
        metrics
            .pool_size
            .set(i64::try_from(pool_size.max(1)).unwrap_or(i64::MAX));
        let repository = PgRepository {
            commits: Committer::start(pool.clone(), metrics.clone(), recent),
            pool,
            metrics,
        };
        repository.probe_at_start().await?;
        Ok(repository)
    }

    /// Checks that the database accepts writes, trying [`START_PROBES`] times a second apart:
    /// a replica starting while the database is busy (other replicas starting, a load spike)
    /// may see its first write outlast the statement timeout, and should start late rather
    /// than not at all. A database that refuses writes is found out after the last try.
    async fn probe_at_start(&self) -> Result<(), StorageError> {
        let mut tries = 1;
        loop {
            match self.write(Write::Probe(probe_time())).await {
                Ok(_) => return Ok(()),
                Err(e) if tries < START_PROBES => {
                    tracing::warn!(
                        error = %e,
                        "the database refused a write at start-up (try {tries} of {START_PROBES}); trying again"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    tries += 1;
                }
                Err(e) => return Err(StorageError::NotWritable(e.to_string())),
            }
        }
    }

    /// Runs `op` on a pooled connection within [`QUERY_TIMEOUT`].
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, DieselError>,
    ) -> Result<T, RepositoryError> {
        run(&self.pool, &self.metrics, op).await
    }

    /// Carries out a write: an advance's compare-and-set or a new workflow in the next shared
    /// batch (but for an approval judged by the gate's rules), anything else in a transaction
    /// of its own.
    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        let written = match write {
            Write::Commit(commit) if commit.gated => {
                self.commits.forget(&commit.feature_id);
                self.run(async |conn| commits::apply_gated(conn, &commit).await)
                    .await?
            }
            Write::Commit(commit) => self.commits.submit(commit).await?,
            // Its event is the first entry's `workflow.transitioned`, which the batch writes.
            Write::Create(feature_id, row, first, _event, receipt) => {
                let creation = Creation {
                    feature_id,
                    row,
                    first,
                    receipt,
                };
                self.commits.create(creation).await?
            }
            other => {
                // The system's change at an expired gate is committed here, not by a batch:
                // the row the batches remember of that workflow is to be read again.
                if let Write::NoteOverdue(_, _, Some(commit)) = &other {
                    self.commits.forget(&commit.feature_id);
                }
                self.run(async |conn| {
                    conn.transaction(async |conn| ops::apply(conn, &other).await)
                        .await
                })
                .await?
            }
        };
        written.into_result()
    }
}

/// Runs `op` on a connection of `pool` within [`QUERY_TIMEOUT`].
async fn run<T>(
    pool: &PgPool,
    metrics: &StorageMetrics,
    op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, DieselError>,
) -> Result<T, RepositoryError> {
    within(QUERY_TIMEOUT, pool, metrics, op).await
}

/// Runs `op` on a connection of `pool` within `bound`. A connection whose operation failed
/// or was given up on is taken out of the pool: its state is unknown, and a later request
/// must not inherit it. One the database answered with an error (a statement or lock timeout,
/// a serialization failure) goes back, unless that error ended the session (a restart, a
/// terminated backend: the connection is closed) or left a transaction open. (A sweep that
/// finds a gate's row held would otherwise open a connection a second.)
async fn within<T>(
    bound: Duration,
    pool: &PgPool,
    metrics: &StorageMetrics,
    op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, DieselError>,
) -> Result<T, RepositoryError> {
    let asked = std::time::Instant::now();
    let conn = pool.get().await.map_err(|e| {
        if matches!(
            e,
            deadpool::managed::PoolError::Timeout(deadpool::managed::TimeoutType::Wait)
        ) {
            metrics.pool_timeouts.inc();
        }
        unavailable(e)
    })?;
    let _in_use = InUse::take(metrics, asked.elapsed());
    let mut loan = Loan(Some(conn));
    let Some(conn) = loan.0.as_deref_mut() else {
        return Err(RepositoryError::Unavailable("no connection".into()));
    };
    let error = match tokio::time::timeout(bound, op(conn)).await {
        Ok(Ok(value)) => {
            loan.give_back();
            return Ok(value);
        }
        Ok(Err(e)) => {
            let sound = answered_with_an_error(&e) && !conn.is_broken();
            let error = classify(e);
            if matches!(error, RepositoryError::Unavailable(_)) && !sound {
                loan.discard();
            } else {
                loan.give_back();
            }
            error
        }
        // Dropped unsettled: what it runs is cancelled.
        Err(_) => RepositoryError::Unavailable("the database did not answer in time".into()),
    };
    Err(error)
}

/// A pooled connection lent to one operation. Dropped before the operation settled it — given
/// up on past its bound, or dropped with its caller (the health probe's own bound, a request
/// whose client left) — it is taken out of the pool, and what it runs is cancelled on the
/// server, on a task of its own (within [`POOL_WAIT`]), before the connection is closed. The
/// server does not notice a client gone while a statement runs: a statement given up on would
/// run on, and could commit after its callers were answered 503 (an advance batch whose read
/// and write each took most of their `statement_timeout`). One already past its commit stays
/// committed: this makes the window small, not empty (a 503's outcome is unknown, as the API
/// says).
struct Loan(Option<Object<AsyncPgConnection>>);

impl Loan {
    /// The operation ended: the connection goes back to the pool.
    fn give_back(mut self) {
        self.0.take();
    }

    /// The operation ended, leaving the connection in a state no later request may inherit.
    fn discard(mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        let Some(conn) = self.0.take() else {
            return;
        };
        let conn = Object::take(conn);
        // Without a runtime (a caller's own, being shut down) there is no task to send it on:
        // the connection closes, and the server ends the statement when it next writes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if !cancel_on_server(conn.cancel_token()).await {
                tracing::warn!(
                    "a statement given up on could not be cancelled on the server; it may run \
                     to its statement_timeout"
                );
            }
            // Closed once the cancel is sent: a pooler in front of the server (PgBouncer)
            // matches a cancel to a client connection still open.
            drop(conn);
        });
    }
}

/// Asks the server to cancel the statement the connection of `token` runs; whether it was
/// asked within [`POOL_WAIT`].
async fn cancel_on_server(token: tokio_postgres::CancelToken) -> bool {
    let cancelled =
        tokio::time::timeout(POOL_WAIT, token.cancel_query(tokio_postgres::NoTls)).await;
    matches!(cancelled, Ok(Ok(())))
}

/// A pool that cannot hand out a connection: the store is unreachable.
fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

/// A pool of at most `pool_size` connections to `url` (with [`with_timeouts`]'s bounds). Each
/// connection it opens asks when its server started: another time than before means another
/// server (a standby promoted in a failover, maybe without the last commits, where a version
/// the commit queue remembers can name another row; or a restart), and the queue forgets the
/// rows it remembers (`recent`), also after a failover none of its own batches saw fail.
fn pool(url: &str, pool_size: usize, recent: Arc<Recent>) -> Result<PgPool, StorageError> {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // Skip the test query on every checkout (a round trip per request); a connection the
    // server closed fails its next query, answers 503, and is taken out of the pool.
    config.recycling_method = RecyclingMethod::Fast;
    // Connected here rather than by diesel-async, which keeps only the driver's own words for
    // a failure ("error connecting to server"): the cause (refused, no such host, timed out)
    // is what the operator needs.
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        Box::pin(async move {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(with_causes(&e)))?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        with_timeouts(url),
        config,
    );
    Pool::builder(manager)
        .max_size(pool_size.max(1))
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .runtime(deadpool::Runtime::Tokio1)
        .post_create(Hook::async_fn(move |conn, _| {
            let recent = recent.clone();
            Box::pin(async move {
                // Bounded as the connection itself is: deadpool bounds neither.
                match tokio::time::timeout(POOL_WAIT, server_started(conn)).await {
                    Ok(Ok(started)) => {
                        recent.connected_to(started);
                        Ok(())
                    }
                    // Which server this is cannot be told: forget as if another, and give up
                    // the connection (its caller is answered 503).
                    failed => {
                        recent.clear();
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "no answer in time".to_owned(),
                        };
                        tracing::warn!(error = %why, "a new database connection could not say which server it reached");
                        Err(HookError::message(format!(
                            "a new connection could not say which server it reached: {why}"
                        )))
                    }
                }
            })
        }))
        .build()
        .map_err(|e| StorageError::Connect(e.to_string()))
}

/// When the server `conn` reaches started, as it says (seconds since the epoch: the same text
/// whatever the session's time zone and date style).
async fn server_started(conn: &mut AsyncPgConnection) -> QueryResult<String> {
    #[derive(diesel::QueryableByName)]
    struct Started {
        #[diesel(sql_type = diesel::sql_types::Text)]
        started: String,
    }
    let started: Started =
        diesel::sql_query("SELECT extract(epoch FROM pg_postmaster_start_time())::text AS started")
            .get_result(conn)
            .await?;
    Ok(started.started)
}

/// Whether the database answered a statement with an error (one with an SQLSTATE), which
/// rolls it back (an error that ends the session, a FATAL one, closes the connection too:
/// [`within`] asks the connection). A failure of the connection (diesel-async's
/// `UnableToSendCommand`, with no SQLSTATE) is no such answer: the statement may have
/// committed.
fn answered_with_an_error(error: &DieselError) -> bool {
    use diesel::result::DatabaseErrorKind;
    matches!(error, DieselError::DatabaseError(kind, _)
        if !matches!(kind, DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection))
}

#[async_trait]
impl DurableRepository for PgRepository {
    async fn import(&self, items: &[(Workflow, Transition)]) -> Result<(), RepositoryError> {
        self.write(models::import(items)).await.map(|_| ())
    }

    fn sole_server(&self) -> bool {
        false
    }

    fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }
}

#[async_trait]
impl WorkflowRepository for PgRepository {
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
        let row = self
            .run(async |conn| ops::get(conn, feature_id.as_str()).await)
            .await?;
        models::workflow(feature_id, row)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(
        &self,
        state: Option<WorkflowState>,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let after = after.map_or("", FeatureId::as_str);
        let rows = self
            .run(async |conn| ops::page(conn, state, after, i64::from(limit)).await)
            .await?;
        models::convert(rows)
    }

    async fn summary(&self) -> Result<StateCounts, RepositoryError> {
        let rows = self.run(async |conn| ops::state_counts(conn).await).await?;
        models::state_counts(rows)
    }

    async fn list_overdue(
        &self,
        now: Timestamp,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let after = after.map_or("", FeatureId::as_str);
        let rows = self
            .run(async |conn| ops::overdue_page(conn, micros(now), after, i64::from(limit)).await)
            .await?;
        models::convert(rows)
    }

    async fn gates_by_due(&self, limit: u32) -> Result<Vec<Workflow>, RepositoryError> {
        let rows = self
            .run(async |conn| ops::gates_by_due(conn, i64::from(limit)).await)
            .await?;
        models::convert(rows)
    }

    async fn count_overdue(&self, now: Timestamp) -> Result<u64, RepositoryError> {
        let n = self
            .run(async |conn| ops::overdue_count(conn, micros(now)).await)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn unnoted_overdue(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        models::decodable_overdue(limit, |asked| {
            self.run(async move |conn| ops::unnoted_overdue(conn, micros(now), asked).await)
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
        let rows = self
            .run(async |conn| ops::history(conn, feature_id.as_str()).await)
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

    /// Judged in the next advance batch, on the workflow as that batch reads it: one query
    /// reads every judged workflow of the batch, and a judged advance whose workflow changed
    /// before the batch's statement is judged again in a later one.
    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn advance(
        &self,
        feature_id: &FeatureId,
        judge: Judge,
    ) -> Result<Workflow, orchestrator_core::Error> {
        self.commits
            .advance(feature_id.clone(), judge)
            .await?
            .into_advanced()
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
        let read = self
            .run(async |conn| ops::events(conn, to_i64(after), filter, i64::from(limit)).await)
            .await?;
        models::event_slice(read)
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let purge = || Write::PurgeEvents(micros(before));
        crate::storage::write::purge_in_chunks(purge, |write| self.write(write)).await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        if !self.commits.running() {
            return Err(RepositoryError::Unavailable(
                "the commit queue has stopped".into(),
            ));
        }
        self.run(async |conn| ops::ping(conn).await).await?;
        self.write(Write::Probe(probe_time())).await.map(|_| ())
    }

    async fn close(&self) {
        self.pool.close();
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError> {
        let found = self
            .run(async |conn| ops::hub_session(conn, feature_id.as_str()).await)
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
        let rows = self
            .run(async |conn| ops::consultations(conn, feature_id.as_str()).await)
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
        let ids: Vec<&str> = feature_ids.iter().map(FeatureId::as_str).collect();
        let rows = self
            .run(async |conn| ops::gate_blockers(conn, ids.clone()).await)
            .await?;
        models::convert(rows)
    }
}

/// Whether the driver reads `url`, with the settings the server adds to it; if not, why, in
/// words that hold no part of the URL (a password may be in it).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    // The driver's own words are "invalid connection string"; its cause says which part.
    let config: tokio_postgres::Config = with_timeouts(url)
        .parse()
        .map_err(|e: tokio_postgres::Error| with_causes(&e))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err("it names no host".to_owned());
    }
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(
            "sslmode=require asks for TLS, which this server does not speak to PostgreSQL (keep the database on a private network)"
                .to_owned(),
        );
    }
    Ok(())
}

/// An error and its causes, each after a colon: the driver's own words name the step that
/// failed ("error connecting to server"), its causes why ("Connection refused").
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    format!("{error}{}", crate::causes(error))
}

/// `url` as the log may show it: user, hosts, ports and database, never a password or the
/// other parameters (`postgres://app@db:5432/orchestrator`).
pub(crate) fn shown(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "postgres://…".to_owned();
    };
    // Names, or (`hostaddr=` alone) addresses.
    let named: Vec<String> = if config.get_hosts().is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .map(|address| match address {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            })
            .collect()
    } else {
        config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) if name.contains(':') => {
                    format!("[{name}]")
                }
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    };
    let hosts: Vec<String> = named
        .into_iter()
        .enumerate()
        .map(
            |(n, host)| match config.get_ports().get(n).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            },
        )
        .collect();
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let database = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{database}", hosts.join(","))
}

/// The PostgreSQL URL with the connection's time bounds added, unless the operator set them:
/// a connect timeout, TCP keepalives and a user timeout (so a dead peer is noticed). Every
/// session also starts with the server-side statement and idle-in-transaction timeouts and
/// `read committed` (the event log's numbering and the group commit's re-checks rely on it,
/// whatever the database's default): put before an `options` the operator gave, whose own
/// `-c` settings come later and so win.
fn with_timeouts(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let named = |params: &[String], name: &str| {
        params
            .iter()
            .position(|p| p.split('=').next() == Some(name))
    };
    for (name, value) in [
        ("connect_timeout", "5"),
        ("keepalives_idle", "10"),
        ("keepalives_interval", "5"),
        // Seconds, as tokio-postgres reads it (libpq's milliseconds would be four hours).
        ("tcp_user_timeout", "15"),
    ] {
        if named(&params, name).is_none() {
            params.push(format!("{name}={value}"));
        }
    }
    let ours = format!(
        "-c%20statement_timeout%3D{}\
         %20-c%20idle_in_transaction_session_timeout%3D{}\
         %20-c%20default_transaction_isolation%3Dread%5C%20committed",
        STATEMENT_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    match named(&params, "options") {
        Some(at) => {
            let theirs = params[at].split_once('=').map_or("", |(_, value)| value);
            params[at] = format!("options={ours}%20{theirs}");
        }
        None => params.push(format!("options={ours}")),
    }
    format!("{base}?{}", params.join("&"))
}

/// Runs the PostgreSQL migrations under an advisory lock, so replicas starting together take
/// turns and the later ones find nothing to do. Without the statement timeout: waiting for
/// another replica's migration, or a migration that rewrites a large table, takes as long as
/// it takes (the connection gets its timeout back before it returns to the pool).
///
/// Under the same lock, when this server is alone on the database (see [`alone`]), fails the
/// asks a stopped server left under way: a server starting meanwhile waits for the lock,
/// connected (so it is seen), and cannot have made an ask before the lock is let go.
async fn migrate(pool: &PgPool) -> Result<(), StorageError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    diesel::sql_query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(|e| StorageError::Migrate(e.to_string()))?;
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let free: Vec<Locked> = diesel::sql_query(format!(
        "SELECT pg_try_advisory_lock({MIGRATION_LOCK}) AS locked"
    ))
    .load(&mut *conn)
    .await
    .map_err(|e| StorageError::Migrate(e.to_string()))?;
    if !matches!(free.as_slice(), [Locked { locked: true }]) {
        // Said, since the port opens only afterwards: a replica waiting here shows nothing else.
        tracing::info!(
            "waiting for another server's migrations (the database's migration lock) before starting"
        );
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .execute(&mut *conn)
            .await
            .map_err(|e| StorageError::Migrate(e.to_string()))?;
    }
    // Once this server holds the migrations' lock (waiting for another's, however long, is
    // right), its own waits for tables are bounded.
    diesel::sql_query(format!(
        "SET lock_timeout = {}",
        MIGRATION_LOCK_WAIT.as_millis()
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| StorageError::Migrate(e.to_string()))?;
    let alone = alone(&mut conn).await;
    let mut given_up = CancelOnDrop(Some(conn.cancel_token()));
    let mut harness = AsyncMigrationHarness::new(conn);
    let mut tries = 1;
    let migrated = loop {
        // On a thread of its own: the harness blocks its thread while it runs, and the task
        // that awaits it stays free to see a stop signal meanwhile (start-up then ends there,
        // and the database rolls the migration under way back).
        let (returned, ran) = tokio::task::spawn_blocking(move || {
            let ran = harness
                .run_pending_migrations(MIGRATIONS)
                .map(|_| ())
                .map_err(|e| e.to_string());
            if ran.is_ok() {
                super::warn_of_unknown_migrations(&mut harness, &MIGRATIONS);
            }
            (harness, ran)
        })
        .await
        .map_err(|e| StorageError::Migrate(format!("the migrations' thread failed: {e}")))?;
        harness = returned;
        match ran {
            Ok(()) => break Ok(()),
            // Each migration runs in a transaction of its own: the one that waited too long,
            // or that PostgreSQL ended to break a deadlock with other sessions' locks, was
            // rolled back, and the next try starts with it. (The messages are PostgreSQL's in
            // English; a server set to another `lc_messages` fails at once instead.)
            Err(e)
                if tries < MIGRATION_TRIES
                    && (e.contains("lock timeout") || e.contains("deadlock detected")) =>
            {
                tracing::warn!(
                    error = %e,
                    tries,
                    "a migration waited for a table another session holds (a long transaction, \
                     a backup, a replica's read); trying again in a second"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                tries += 1;
            }
            Err(e) => break Err(StorageError::Migrate(e)),
        }
    };
    given_up.0 = None;
    let mut conn = harness.into_inner();
    if alone && migrated.is_ok() {
        interrupt_left_asks(&mut conn).await;
    }
    let unlocked = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(&mut *conn)
        .await;
    migrated?;
    unlocked.map_err(|e| StorageError::Migrate(e.to_string()))?;
    // Back to the session's defaults: the URL's `statement_timeout`, the server's
    // `lock_timeout`.
    diesel::sql_query("RESET lock_timeout")
        .execute(&mut *conn)
        .await
        .map_err(|e| StorageError::Migrate(e.to_string()))?;
    diesel::sql_query("RESET statement_timeout")
        .execute(&mut *conn)
        .await
        .map_err(|e| StorageError::Migrate(e.to_string()))?;
    Ok(())
}

/// Cancels the migrations' statement on the server when start-up gives them up before they
/// end: a stop signal drops the future that awaits them, and the thread running them, which
/// nothing can stop, would leave the statement running on the server (holding its tables'
/// locks and the migrations' lock) until it ended and was rolled back — minutes, for one that
/// rewrites a large table.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(token) = self.0.take() else {
            return;
        };
        // On a thread and runtime of its own, waited for: the process is about to end, and
        // its runtime with it.
        let sent = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .is_ok_and(|runtime| runtime.block_on(cancel_on_server(token)))
        })
        .join();
        if !matches!(sent, Ok(true)) {
            tracing::warn!(
                "the migration given up on could not be cancelled on the server; it runs until \
                 it ends, then is rolled back"
            );
        }
    }
}

/// Fails every ask under way (and drops every reservation): run only by a server alone on the
/// database, before it serves, so each was left by a server that stopped. A failure is logged
/// and left to the sweep of old asks.
async fn interrupt_left_asks(conn: &mut AsyncPgConnection) {
    let now = chrono::Utc::now();
    let write = Write::interrupt_asks(now, &ConsultationError::interrupted(), now);
    // With the time bounds every other write has, not the migrations'.
    let bounded = async |conn: &mut AsyncPgConnection| {
        for reset in [
            "SET LOCAL lock_timeout TO DEFAULT",
            "SET LOCAL statement_timeout TO DEFAULT",
        ] {
            diesel::sql_query(reset).execute(conn).await?;
        }
        ops::apply(conn, &write).await
    };
    match conn.transaction(bounded).await {
        Ok(written) if written.count() > 0 => tracing::warn!(
            consultations = written.count(),
            "asks left by a stopped server marked interrupted"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not look for asks left by a stopped server"),
    }
}

/// Sessions connected to this database besides `conn`'s: other servers (a running replica
/// keeps pool connections open, whatever its version, and reads the event log ten times a
/// second), or anything else. A row whose database or kind this role may not see counts too.
const OTHER_SESSIONS: &str = "SELECT count(*) AS others FROM pg_stat_activity \
     WHERE pid <> pg_backend_pid() \
     AND (datname IS NULL OR datname = current_database()) \
     AND (backend_type IS NULL OR backend_type = 'client backend')";

#[derive(diesel::QueryableByName)]
struct Others {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    others: i64,
}

/// Whether `conn`, the only connection this server has opened yet, is the only session on the
/// database: then no other server is running on it, and every ask under way was left by one
/// that stopped. Any doubt (another session, the view unreadable) answers no.
async fn alone(conn: &mut AsyncPgConnection) -> bool {
    let others: Result<Vec<Others>, _> = diesel::sql_query(OTHER_SESSIONS).load(conn).await;
    match others.as_deref() {
        Ok([Others { others: 0 }]) => true,
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not tell whether other servers use the database; taking it that they do");
            false
        }
    }
}

/// A statement written out by hand (`commits::Batch`, `ops::Append`): fixed SQL text around
/// the parameters `walk` binds. Run as [`Prepared`], whose query id is the statement's type,
/// so diesel prepares it once per connection (`diesel::sql_query` is parsed and planned by
/// PostgreSQL at every call).
trait Statement: Send + 'static {
    /// Writes the statement's text and binds its parameters.
    fn walk<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

/// A [`Statement`] as diesel runs it, prepared once per connection.
struct Prepared<S>(S);

impl<S: Statement> QueryId for Prepared<S> {
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Statement> Query for Prepared<S> {
    type SqlType = Untyped;
}

impl<S: Statement> QueryFragment<Pg> for Prepared<S> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk(out)
    }
}

/// One column of a statement's rows: `f` of each row, in order (bound with [`bind_array`]).
fn column<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Writes `values` into a statement being built as one array parameter, then `then` (the
/// parameter's cast and what follows it, e.g. `"::text[], "`): the prepared statements of
/// `commits` and `ops` send their rows as arrays, one per column, and unnest them.
fn bind_array<'b, T, U>(out: &mut AstPass<'_, 'b, Pg>, values: &'b U, then: &str) -> QueryResult<()>
where
    Pg: HasSqlType<T>,
    U: ToSql<T, Pg> + ?Sized,
{
    out.push_bind_param::<T, U>(values)?;
    out.push_sql(then);
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
            url.contains(
                "options=-c%20statement_timeout%3D5000\
                 %20-c%20idle_in_transaction_session_timeout%3D3000\
                 %20-c%20default_transaction_isolation%3Dread%5C%20committed"
            ),
            "{url}"
        );
        let own = with_timeouts("postgres://u@h/db?connect_timeout=1&sslmode=disable");
        assert!(
            own.contains("connect_timeout=1&sslmode=disable&keepalives_idle"),
            "{own}"
        );
        assert_eq!(own.matches("connect_timeout").count(), 1);
        // An operator's own options keep ours too, theirs last (so theirs win).
        let own = with_timeouts("postgres://u@h/db?options=-c%20search_path%3Dapp");
        assert_eq!(own.matches("options=").count(), 1, "{own}");
        assert!(
            own.contains("read%5C%20committed%20-c%20search_path%3Dapp"),
            "{own}"
        );
        assert!(own.contains("statement_timeout%3D5000"), "{own}");
    }

    #[test]
    fn a_url_is_shown_without_its_password_and_checked_before_any_connection() {
        assert_eq!(
            shown("postgres://app:s3cret@db.internal:6432/orch?sslmode=disable"),
            "postgres://app@db.internal:6432/orch"
        );
        assert_eq!(
            shown("postgresql://u:p@a,b:5433/x"),
            "postgres://u@a:5432,b:5433/x"
        );
        assert_eq!(shown("postgres://[::1]/x"), "postgres://[::1]:5432/x");
        assert!(check_url("postgres://u:p@h:5432/db?sslmode=prefer").is_ok());
        // An address alone is a host, as the driver connects to it.
        let by_address = "postgres://u:p@/db?hostaddr=127.0.0.1";
        assert!(check_url(by_address).is_ok());
        assert_eq!(shown(by_address), "postgres://u@127.0.0.1/db");
        for (url, why) in [
            (
                "postgres://u:s3cret@h:99999/db",
                "invalid value for option `port`",
            ),
            ("postgres://u:s3cret@h/db?bogus=1", "unknown option `bogus`"),
            ("postgres://", "names no host"),
            ("postgres://u:s3cret@h/db?sslmode=require", "TLS"),
        ] {
            let refused = check_url(url).unwrap_err();
            assert!(
                refused.contains(why) && !refused.contains("s3cret"),
                "{url}: {refused}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_that_fails_says_why() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = PgRepository::connect(&format!("postgres://u:s3cret@127.0.0.1:{port}/x"), 1)
            .await
            .err()
            .map(|e| e.to_string());
        let refused = refused.expect("nothing listens there");
        assert!(
            refused.contains("error connecting to server: Connection refused")
                && !refused.contains("s3cret"),
            "{refused}"
        );
    }

    #[test]
    fn the_user_timeout_is_given_in_the_seconds_tokio_postgres_reads() {
        let url = with_timeouts("postgres://u@h/db");
        let config: tokio_postgres::Config = url.parse().expect("a URL tokio-postgres reads");
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(15))
        );
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(5)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_new_connection_to_the_same_server_keeps_the_commit_queue_s_rows() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        let recent = Arc::new(Recent::default());
        let pool = pool(&url, 2, recent.clone()).unwrap();
        drop(pool.get().await.expect("TEST_DATABASE_URL is reachable"));
        recent.wrote(recent::tests::row("f", 2), recent.since());
        // One is discarded (as a failed one is) and the next checkout opens another, to the
        // same server: nothing is forgotten.
        drop(Object::take(pool.get().await.unwrap()));
        drop(pool.get().await.unwrap());
        assert!(recent.take("f").is_some(), "kept: the same server");
        // Another server (its start time told apart here as a failover's would be).
        recent.wrote(recent::tests::row("f", 3), recent.since());
        recent.connected_to("another server's start".into());
        assert!(recent.take("f").is_none(), "forgotten");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_the_database_answered_with_an_error_goes_back_to_the_pool() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        let pool = pool(&url, 2, Arc::new(Recent::default())).unwrap();
        let metrics = StorageMetrics::default();
        // Refused by the database (division by zero), in a transaction and outside one.
        let outside = run(&pool, &metrics, async |conn| {
            diesel::sql_query("SELECT 1 / 0").execute(conn).await
        })
        .await;
        assert!(matches!(outside, Err(RepositoryError::Unavailable(_))));
        let inside = run(&pool, &metrics, async |conn| {
            conn.transaction(async |conn| diesel::sql_query("SELECT 1 / 0").execute(conn).await)
                .await
        })
        .await;
        assert!(matches!(inside, Err(RepositoryError::Unavailable(_))));
        assert_eq!(pool.status().size, 1, "the one connection was kept");
        // A connection given up on is not.
        let given_up = within(Duration::from_millis(100), &pool, &metrics, async |conn| {
            diesel::sql_query("SELECT pg_sleep(1)").execute(conn).await
        })
        .await;
        assert!(matches!(given_up, Err(RepositoryError::Unavailable(_))));
        assert_eq!(pool.status().size, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_statement_given_up_on_is_cancelled_on_the_server() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        let pool = pool(&url, 2, Arc::new(Recent::default())).unwrap();
        let metrics = StorageMetrics::default();
        #[derive(diesel::QueryableByName)]
        struct Running {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            running: i64,
        }
        // Given up on past its own bound, or dropped by its caller (whose bound came first).
        for by_its_caller in [false, true] {
            let marker = format!("given_up_{}", uuid::Uuid::new_v4().simple());
            // Four seconds: under the statement timeout, so only a cancel ends it sooner.
            let sleep = format!("SELECT pg_sleep(4) AS {marker}");
            let (bound, callers) = if by_its_caller {
                (QUERY_TIMEOUT, Duration::from_millis(300))
            } else {
                (Duration::from_millis(300), QUERY_TIMEOUT)
            };
            let outcome = tokio::time::timeout(
                callers,
                within(bound, &pool, &metrics, async |conn| {
                    diesel::sql_query(&sleep).execute(conn).await
                }),
            )
            .await;
            match outcome {
                Err(_) => assert!(by_its_caller),
                Ok(outcome) => assert!(
                    matches!(outcome, Err(RepositoryError::Unavailable(_))),
                    "{outcome:?}"
                ),
            }
            assert_eq!(pool.status().size, 0, "the connection was discarded");
            let mut conn = pool.get().await.unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            loop {
                let seen: Running = diesel::sql_query(format!(
                    "SELECT count(*) AS running FROM pg_stat_activity \
                     WHERE state = 'active' AND query LIKE '%{marker}%' \
                     AND pid <> pg_backend_pid()"
                ))
                .get_result(&mut *conn)
                .await
                .unwrap();
                if seen.running == 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the statement still runs on the server (dropped by its caller: \
                     {by_its_caller})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(Object::take(conn));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_sessions_carry_the_statement_timeout() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        // With an operator's own options beside ours.
        let url = format!(
            "{url}{}options=-c%20application_name%3Dmine",
            if url.contains('?') { '&' } else { '?' }
        );
        let mut conn =
            <AsyncPgConnection as diesel_async::AsyncConnection>::establish(&with_timeouts(&url))
                .await
                .expect("TEST_DATABASE_URL is reachable");
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            setting: String,
        }
        for (name, value) in [
            ("statement_timeout", "5s"),
            ("idle_in_transaction_session_timeout", "3s"),
            ("default_transaction_isolation", "read committed"),
            ("application_name", "mine"),
        ] {
            let shown: Setting =
                diesel::sql_query(format!("SELECT current_setting('{name}') AS setting"))
                    .get_result(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(shown.setting, value, "{name}");
        }
    }
}
