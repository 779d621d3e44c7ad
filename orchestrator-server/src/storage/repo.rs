//! `DieselWorkflowRepository`: the `WorkflowRepository` contract on diesel-async, for SQLite
//! and PostgreSQL alike.
//!
//! Every query is written once, inside [`with_connection!`], which compiles the body for each
//! back end's connection type. Writes are one transaction each: a workflow row and its history
//! row change together or not at all, and a commit is a compare-and-set on the version.

use async_trait::async_trait;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, RunQueryDsl};
use orchestrator_core::hub::{AnswerStatus, HubSessionId};
use orchestrator_core::{
    Consultation, FeatureId, RepositoryError, StateCounts, Transition, Version, Workflow,
    WorkflowRepository, WorkflowState,
};

use super::models::{ConsultationRow, CorruptRow, TransitionRow, WorkflowRow, enum_text, to_i64};
use super::schema::{consultations, transitions, workflows};
use super::{PgPool, SqlitePool};

/// The connections of one store.
#[derive(Clone)]
pub(super) enum Pools {
    /// SQLite: readers share a pool; every write goes through the one `write` connection, so
    /// writers queue in the process instead of contending for SQLite's lock.
    Sqlite {
        /// Connections for reads; with WAL they never wait for the writer.
        read: SqlitePool,
        /// A pool of exactly one connection.
        write: SqlitePool,
    },
    /// PostgreSQL: one pool; the database arbitrates between writers, also across replicas.
    Postgres(PgPool),
}

/// Binds `$conn` to a connection from the `$role` pool (`read` or `write`) of the store's back
/// end and evaluates `$body` with it: the body is written once and type-checked per back end.
macro_rules! with_connection {
    ($repo:expr, $role:ident, |$conn:ident| $body:expr) => {
        match &$repo.pools {
            Pools::Sqlite { $role: pool, .. } => {
                let mut object = pool.get().await.map_err(unavailable)?;
                let $conn = &mut *object;
                $body
            }
            Pools::Postgres(pool) => {
                let mut object = pool.get().await.map_err(unavailable)?;
                let $conn = &mut *object;
                $body
            }
        }
    };
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

/// What a write transaction decided, beyond database errors.
enum Outcome {
    Done,
    Refused(RepositoryError),
}

impl Outcome {
    fn into_result(self) -> Result<(), RepositoryError> {
        match self {
            Outcome::Done => Ok(()),
            Outcome::Refused(error) => Err(error),
        }
    }
}

impl DieselWorkflowRepository {
    pub(super) fn new(pools: Pools) -> Self {
        DieselWorkflowRepository { pools }
    }
}

/// A pool that cannot hand out a connection: the store is unreachable.
fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

/// Translates a diesel failure that no caller handles.
fn backend(error: DieselError) -> RepositoryError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
        | DieselError::BrokenTransactionManager => RepositoryError::Unavailable(Box::new(error)),
        other => RepositoryError::Backend(Box::new(other)),
    }
}

fn corrupt(error: CorruptRow) -> RepositoryError {
    RepositoryError::Backend(Box::new(error))
}

fn workflows_from(rows: Vec<WorkflowRow>) -> Result<Vec<Workflow>, RepositoryError> {
    rows.into_iter()
        .map(|row| Workflow::try_from(row).map_err(corrupt))
        .collect()
}

#[async_trait]
impl WorkflowRepository for DieselWorkflowRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id))]
    async fn create(&self, workflow: &Workflow, first: &Transition) -> Result<(), RepositoryError> {
        let row = WorkflowRow::from(workflow);
        let history = TransitionRow::new(&workflow.feature_id, first);
        let id = &workflow.feature_id;
        with_connection!(self, write, |conn| {
            conn.transaction::<_, DieselError, _>(async |conn| {
                let inserted = diesel::insert_into(workflows::table)
                    .values(&row)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    return Ok(Outcome::Refused(RepositoryError::AlreadyExists(id.clone())));
                }
                diesel::insert_into(transitions::table)
                    .values(&history)
                    .execute(conn)
                    .await?;
                Ok(Outcome::Done)
            })
            .await
            .map_err(backend)?
            .into_result()
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn get(&self, feature_id: &FeatureId) -> Result<Workflow, RepositoryError> {
        let row: Option<WorkflowRow> = with_connection!(self, read, |conn| {
            workflows::table
                .find(feature_id.as_str())
                .select(WorkflowRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(backend)?
        });
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
        let rows: Vec<WorkflowRow> = with_connection!(self, read, |conn| {
            let mut query = workflows::table
                .select(WorkflowRow::as_select())
                .order(workflows::feature_id.asc())
                .limit(i64::from(limit))
                .into_boxed();
            if let Some(state) = state {
                query = query.filter(workflows::state.eq(state.as_str()));
            }
            if let Some(after) = after {
                query = query.filter(workflows::feature_id.gt(after.as_str()));
            }
            query.load(conn).await.map_err(backend)?
        });
        workflows_from(rows)
    }

    async fn summary(&self) -> Result<StateCounts, RepositoryError> {
        let rows: Vec<(String, i64)> = with_connection!(self, read, |conn| {
            workflows::table
                .group_by(workflows::state)
                .select((workflows::state, count_star()))
                .load(conn)
                .await
                .map_err(backend)?
        });
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
        let rows: Vec<TransitionRow> = with_connection!(self, read, |conn| {
            transitions::table
                .filter(transitions::feature_id.eq(feature_id.as_str()))
                .order(transitions::seq.asc())
                .select(TransitionRow::as_select())
                .load(conn)
                .await
                .map_err(backend)?
        });
        // Every stored workflow has at least its start; no rows means no workflow.
        if rows.is_empty() {
            return Err(RepositoryError::NotFound(feature_id.clone()));
        }
        rows.into_iter()
            .map(|row| Transition::try_from(row).map_err(corrupt))
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id, expected_version))]
    async fn commit(
        &self,
        expected_version: Version,
        workflow: &Workflow,
        transition: &Transition,
    ) -> Result<(), RepositoryError> {
        let row = WorkflowRow::from(workflow);
        let history = TransitionRow::new(&workflow.feature_id, transition);
        let id = &workflow.feature_id;
        with_connection!(self, write, |conn| {
            conn.transaction::<_, DieselError, _>(async |conn| {
                // The compare-and-set: only the writer that still sees `expected_version` wins.
                let updated = diesel::update(
                    workflows::table
                        .filter(workflows::feature_id.eq(id.as_str()))
                        .filter(workflows::version.eq(to_i64(expected_version))),
                )
                .set(&row)
                .execute(conn)
                .await?;
                if updated == 0 {
                    let actual: Option<i64> = workflows::table
                        .find(id.as_str())
                        .select(workflows::version)
                        .first(conn)
                        .await
                        .optional()?;
                    return Ok(Outcome::Refused(match actual {
                        Some(actual) => RepositoryError::VersionConflict {
                            expected: expected_version,
                            actual: u64::try_from(actual).unwrap_or(0),
                        },
                        None => RepositoryError::NotFound(id.clone()),
                    }));
                }
                diesel::insert_into(transitions::table)
                    .values(&history)
                    .execute(conn)
                    .await?;
                Ok(Outcome::Done)
            })
            .await
            .map_err(backend)?
            .into_result()
        })
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        with_connection!(self, read, |conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .await
                .map_err(|e| RepositoryError::Unavailable(Box::new(e)))?;
        });
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError> {
        let found: Option<Option<String>> = with_connection!(self, read, |conn| {
            workflows::table
                .find(feature_id.as_str())
                .select(workflows::hub_session_id)
                .first(conn)
                .await
                .optional()
                .map_err(backend)?
        });
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
        let key = feature_id.as_str();
        let stored: Option<Option<String>> = with_connection!(self, write, |conn| {
            // One conditional update, then read what is stored: ours, or a concurrent winner's.
            let target = workflows::table.filter(workflows::feature_id.eq(key));
            let swap = diesel::update(target).set(workflows::hub_session_id.eq(&new.0));
            match expected {
                None => {
                    swap.filter(workflows::hub_session_id.is_null())
                        .execute(conn)
                        .await
                }
                Some(old) => {
                    swap.filter(workflows::hub_session_id.eq(&old.0))
                        .execute(conn)
                        .await
                }
            }
            .map_err(backend)?;
            workflows::table
                .find(key)
                .select(workflows::hub_session_id)
                .first(conn)
                .await
                .optional()
                .map_err(backend)?
        });
        match stored {
            None => Err(RepositoryError::NotFound(feature_id.clone())),
            Some(session) => Ok(HubSessionId(session.unwrap_or_else(|| new.0.clone()))),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn add_consultation(&self, consultation: &Consultation) -> Result<(), RepositoryError> {
        let row = ConsultationRow::from(consultation);
        let id = &consultation.feature_id;
        with_connection!(self, write, |conn| {
            conn.transaction::<_, DieselError, _>(async |conn| {
                let exists: Option<String> = workflows::table
                    .find(id.as_str())
                    .select(workflows::feature_id)
                    .first(conn)
                    .await
                    .optional()?;
                if exists.is_none() {
                    return Ok(Outcome::Refused(RepositoryError::NotFound(id.clone())));
                }
                diesel::insert_into(consultations::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
                Ok(Outcome::Done)
            })
            .await
            .map_err(backend)?
            .into_result()
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn update_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError> {
        let row = ConsultationRow::from(consultation);
        let pending = enum_text(&AnswerStatus::PendingHuman);
        with_connection!(self, write, |conn| {
            diesel::update(
                consultations::table
                    .find(&row.id)
                    .filter(consultations::status.eq(&pending)),
            )
            .set(&row)
            .execute(conn)
            .await
            .map_err(backend)?;
        });
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>, RepositoryError> {
        let rows: Vec<ConsultationRow> = with_connection!(self, read, |conn| {
            consultations::table
                .filter(consultations::feature_id.eq(feature_id.as_str()))
                .order((consultations::created_at.asc(), consultations::id.asc()))
                .select(ConsultationRow::as_select())
                .load(conn)
                .await
                .map_err(backend)?
        });
        rows.into_iter()
            .map(|row| Consultation::try_from(row).map_err(corrupt))
            .collect()
    }
}
