//! `DieselWorkflowRepository`: the `WorkflowRepository` contract on diesel, for SQLite and
//! PostgreSQL alike.
//!
//! The queries live in `ops`, written once and compiled per back end. This module picks the
//! connection: SQLite reads run inline on a pooled connection and writes go to the writer
//! thread (group commit); PostgreSQL runs everything on its pool, each write in a transaction.
//! Rows become core types here.

use std::sync::Arc;

use async_trait::async_trait;
use diesel::result::Error as DieselError;
use diesel_async::AsyncConnection;
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{
    Consultation, FeatureId, RepositoryError, StateCounts, Transition, Version, Workflow,
    WorkflowRepository, WorkflowState,
};

use super::PgPool;
use super::models::{
    ConsultationRow, CorruptRow, TransitionRow, WorkflowChanges, WorkflowRow, to_i64,
};
use super::ops::{self, Write, Written};
use super::readers::Readers;
use super::writer::Writer;

/// The connections of one store.
#[derive(Clone)]
pub(super) enum Pools {
    /// SQLite: reads run inline on pooled connections; every write goes to the writer thread,
    /// which commits whatever is waiting in one transaction (group commit).
    Sqlite {
        /// Reading connections; with WAL they never wait for the writer.
        readers: Arc<Readers>,
        /// The one writing connection's thread.
        writer: Writer,
        /// The directory of a `sqlite::memory:` store, removed with the last handle.
        _scratch: Option<Arc<tempfile::TempDir>>,
    },
    /// PostgreSQL: one pool; the database arbitrates between writers, also across replicas.
    Postgres(PgPool),
}

/// Runs the read `ops::<backend>::$op(conn, args…)` on the store's back end: inline on a
/// SQLite reader, or awaited on a pooled PostgreSQL connection.
macro_rules! read {
    ($repo:expr, $op:ident($($arg:expr),* $(,)?)) => {
        match &$repo.pools {
            Pools::Sqlite { readers, .. } => readers
                .with(|conn| ops::sqlite::$op(conn, $($arg),*))?
                .map_err(backend)?,
            Pools::Postgres(pool) => {
                let mut conn = pool.get().await.map_err(unavailable)?;
                let result = tokio::time::timeout(
                    super::QUERY_TIMEOUT,
                    ops::postgres::$op(&mut conn, $($arg),*),
                )
                .await;
                settle(conn, result)?
            }
        }
    };
}

type PgConn = deadpool::managed::Object<
    diesel_async::pooled_connection::AsyncDieselConnectionManager<diesel_async::AsyncPgConnection>,
>;

/// The outcome of a PostgreSQL operation that was given [`super::QUERY_TIMEOUT`]. A connection
/// that timed out or failed is taken out of the pool: its state is unknown, and a later
/// request must not inherit it.
fn settle<T>(
    conn: PgConn,
    result: Result<Result<T, DieselError>, tokio::time::error::Elapsed>,
) -> Result<T, RepositoryError> {
    let error = match result {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => backend(e),
        Err(_) => RepositoryError::Unavailable("the database did not answer in time".into()),
    };
    if matches!(error, RepositoryError::Unavailable(_)) {
        drop(deadpool::managed::Object::take(conn));
    }
    Err(error)
}

/// Workflows, their histories and consultations in a SQL database.
#[derive(Clone)]
pub struct DieselWorkflowRepository {
    pools: Pools,
}

impl std::fmt::Debug for DieselWorkflowRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.pools {
            Pools::Sqlite { .. } => "sqlite",
            Pools::Postgres(_) => "postgres",
        };
        f.debug_struct("DieselWorkflowRepository")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl DieselWorkflowRepository {
    pub(super) fn new(pools: Pools) -> Self {
        DieselWorkflowRepository { pools }
    }

    /// Stores many new workflows with their first transitions in one transaction, for seeding
    /// and imports: all of them, or none if any feature id exists already.
    pub async fn import(&self, items: &[(Workflow, Transition)]) -> Result<(), RepositoryError> {
        let rows = items.iter().map(|(w, _)| WorkflowRow::from(w)).collect();
        let history = items
            .iter()
            .map(|(w, t)| TransitionRow::new(&w.feature_id, t))
            .collect();
        self.write(Write::Import(rows, history)).await.map(|_| ())
    }

    /// Writes the probe row through the same path as every write (the writer thread's batch
    /// on SQLite, a transaction on PostgreSQL): proves that the store accepts writes now.
    pub(super) async fn probe_write(&self) -> Result<(), RepositoryError> {
        let at = chrono::Utc::now().timestamp_micros();
        self.write(Write::Probe(at)).await.map(|_| ())
    }

    /// Carries out one write in the writer thread's next batch (SQLite) or in a transaction of
    /// its own (PostgreSQL); a refusal comes back as its error.
    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        let written = match &self.pools {
            Pools::Sqlite { writer, .. } => writer.submit(write).await?,
            Pools::Postgres(pool) => {
                let mut conn = pool.get().await.map_err(unavailable)?;
                let result = tokio::time::timeout(
                    super::QUERY_TIMEOUT,
                    conn.transaction::<_, DieselError, _>(async |conn| {
                        ops::postgres::apply(conn, &write).await
                    }),
                )
                .await;
                settle(conn, result)?
            }
        };
        match written {
            Written::Refused(error) => Err(error),
            other => Ok(other),
        }
    }
}

/// A pool that cannot hand out a connection: the store is unreachable.
fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

/// Translates a diesel failure that no caller handles; see [`super::classify`].
fn backend(error: DieselError) -> RepositoryError {
    super::classify(error)
}

fn corrupt(error: CorruptRow) -> RepositoryError {
    RepositoryError::Backend(Box::new(error))
}

fn convert<R, T: TryFrom<R, Error = CorruptRow>>(rows: Vec<R>) -> Result<Vec<T>, RepositoryError> {
    rows.into_iter()
        .map(|row| T::try_from(row).map_err(corrupt))
        .collect()
}

#[async_trait]
impl WorkflowRepository for DieselWorkflowRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id))]
    async fn create(&self, workflow: &Workflow, first: &Transition) -> Result<(), RepositoryError> {
        let write = Write::Create(
            workflow.feature_id.clone(),
            WorkflowRow::from(workflow),
            TransitionRow::new(&workflow.feature_id, first),
        );
        self.write(write).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn get(&self, feature_id: &FeatureId) -> Result<Workflow, RepositoryError> {
        let row = read!(self, get(feature_id.as_str()));
        row.ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))?
            .try_into()
            .map_err(corrupt)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(
        &self,
        state: Option<WorkflowState>,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let state = state.map(WorkflowState::as_str);
        let after = after.map(FeatureId::as_str);
        let rows = read!(self, list(state, after, i64::from(limit)));
        convert(rows)
    }

    async fn summary(&self) -> Result<StateCounts, RepositoryError> {
        let rows = read!(self, summary());
        let mut pairs = Vec::with_capacity(rows.len());
        for (state, count) in rows {
            let state: WorkflowState = state
                .parse()
                .map_err(|e| RepositoryError::Backend(Box::new(e)))?;
            pairs.push((state, u64::try_from(count).unwrap_or(0)));
        }
        Ok(StateCounts::from_pairs(pairs))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn history(&self, feature_id: &FeatureId) -> Result<Vec<Transition>, RepositoryError> {
        let rows = read!(self, history(feature_id.as_str()));
        // Every stored workflow has at least its start; no rows means no workflow.
        if rows.is_empty() {
            return Err(RepositoryError::NotFound(feature_id.clone()));
        }
        convert(rows)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id, expected_version))]
    async fn commit(
        &self,
        expected_version: Version,
        workflow: &Workflow,
        transition: &Transition,
    ) -> Result<(), RepositoryError> {
        let write = Write::Commit {
            id: workflow.feature_id.clone(),
            expected: to_i64(expected_version),
            changes: WorkflowChanges::from(workflow),
            history: TransitionRow::new(&workflow.feature_id, transition),
        };
        self.write(write).await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        let answered: Result<(), RepositoryError> = async {
            read!(self, ping());
            // Reads alone would say "ok" while every write fails (a full disk, a read-only
            // file) or while the SQLite writer is gone.
            self.probe_write().await
        }
        .await;
        answered.map_err(|e| match e {
            RepositoryError::Backend(inner) => RepositoryError::Unavailable(inner),
            other => other,
        })
    }

    /// Waits for the writes already accepted, then closes the store: on SQLite the write-ahead
    /// log is emptied into the database file and the writer's threads are joined, so a clean
    /// stop leaves no log behind.
    async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                let writer = writer.clone();
                let _ = tokio::task::spawn_blocking(move || writer.shutdown()).await;
            }
            Pools::Postgres(pool) => pool.close(),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError> {
        let found = read!(self, hub_session(feature_id.as_str()));
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
        let write = Write::SwapSession {
            feature_id: feature_id.to_string(),
            expected: expected.map(|s| s.0.clone()),
            new: new.0.clone(),
        };
        match self.write(write).await? {
            Written::Session(Some(stored)) => {
                Ok(HubSessionId(stored.unwrap_or_else(|| new.0.clone())))
            }
            _ => Err(RepositoryError::NotFound(feature_id.clone())),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn add_consultation(&self, consultation: &Consultation) -> Result<(), RepositoryError> {
        let write = Write::AddConsultation(
            consultation.feature_id.clone(),
            ConsultationRow::from(consultation),
        );
        self.write(write).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn update_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError> {
        self.write(Write::UpdateConsultation(ConsultationRow::from(
            consultation,
        )))
        .await
        .map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>, RepositoryError> {
        let rows = read!(self, consultations(feature_id.as_str()));
        convert(rows)
    }
}
