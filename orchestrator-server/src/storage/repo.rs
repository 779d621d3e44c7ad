//! `DieselWorkflowRepository`: the `WorkflowRepository` contract on diesel.
//!
//! Each operation is one blocking closure on one connection, run off the async threads; writes
//! are one `BEGIN IMMEDIATE` transaction each, so a workflow row and its history row change
//! together or not at all.

use async_trait::async_trait;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{
    Consultation, FeatureId, RepositoryError, StateCounts, Transition, Version, Workflow,
    WorkflowRepository, WorkflowState,
};

use super::SqlitePool;
use super::models::{ConsultationRow, TransitionRow, WorkflowRow, enum_text, to_i64};
use super::schema::{consultations, transitions, workflows};

/// Workflows in a SQLite database.
#[derive(Clone)]
pub struct DieselWorkflowRepository {
    /// Connections for reads; with WAL they never wait for the writer.
    read: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl std::fmt::Debug for DieselWorkflowRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselWorkflowRepository")
            .finish_non_exhaustive()
    }
}

/// What a write transaction decided, beyond database errors.
enum Outcome {
    Done,
    Refused(RepositoryError),
}

impl DieselWorkflowRepository {
    pub(super) fn sqlite(read: SqlitePool, write: SqlitePool) -> Self {
        DieselWorkflowRepository { read, write }
    }

    /// Runs `task` on a connection from `pool`, off the async threads.
    async fn run<R: Send + 'static>(
        pool: &SqlitePool,
        task: impl FnOnce(&mut SqliteConnection) -> QueryResult<R> + Send + 'static,
    ) -> Result<R, RepositoryError> {
        let mut conn = pool
            .get()
            .await
            .map_err(|e| RepositoryError::Unavailable(Box::new(e)))?;
        conn.spawn_blocking(task).await.map_err(backend)
    }

    /// Runs `task` in one immediate transaction on the writer.
    async fn write(
        &self,
        task: impl FnOnce(&mut SqliteConnection) -> QueryResult<Outcome> + Send + 'static,
    ) -> Result<(), RepositoryError> {
        match Self::run(&self.write, |conn| conn.immediate_transaction(task)).await? {
            Outcome::Done => Ok(()),
            Outcome::Refused(error) => Err(error),
        }
    }
}

/// Translates a diesel failure that no caller handles.
fn backend(error: DieselError) -> RepositoryError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            RepositoryError::Unavailable(Box::new(error))
        }
        other => RepositoryError::Backend(Box::new(other)),
    }
}

fn corrupt(error: super::models::CorruptRow) -> RepositoryError {
    RepositoryError::Backend(Box::new(error))
}

#[async_trait]
impl WorkflowRepository for DieselWorkflowRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %workflow.feature_id))]
    async fn create(&self, workflow: &Workflow, first: &Transition) -> Result<(), RepositoryError> {
        let row = WorkflowRow::from(workflow);
        let history = TransitionRow::new(&workflow.feature_id, first);
        let id = workflow.feature_id.clone();
        self.write(move |conn| {
            let inserted = diesel::insert_into(workflows::table)
                .values(&row)
                .execute(conn);
            match inserted {
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    return Ok(Outcome::Refused(RepositoryError::AlreadyExists(id)));
                }
                other => other?,
            };
            diesel::insert_into(transitions::table)
                .values(&history)
                .execute(conn)?;
            Ok(Outcome::Done)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn get(&self, feature_id: &FeatureId) -> Result<Workflow, RepositoryError> {
        let key = feature_id.to_string();
        let row = Self::run(&self.read, move |conn| {
            workflows::table
                .find(key)
                .select(WorkflowRow::as_select())
                .first(conn)
                .optional()
        })
        .await?;
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
        let after = after.map(ToString::to_string);
        let rows = Self::run(&self.read, move |conn| {
            let mut query = workflows::table
                .select(WorkflowRow::as_select())
                .order(workflows::feature_id.asc())
                .limit(i64::from(limit))
                .into_boxed();
            if let Some(state) = state {
                query = query.filter(workflows::state.eq(state.as_str()));
            }
            if let Some(after) = after {
                query = query.filter(workflows::feature_id.gt(after));
            }
            query.load(conn)
        })
        .await?;
        rows.into_iter()
            .map(|row| Workflow::try_from(row).map_err(corrupt))
            .collect()
    }

    async fn summary(&self) -> Result<StateCounts, RepositoryError> {
        let rows: Vec<(String, i64)> = Self::run(&self.read, |conn| {
            workflows::table
                .group_by(workflows::state)
                .select((workflows::state, count_star()))
                .load(conn)
        })
        .await?;
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
        let key = feature_id.to_string();
        let rows: Vec<TransitionRow> = Self::run(&self.read, move |conn| {
            transitions::table
                .filter(transitions::feature_id.eq(key))
                .order(transitions::seq.asc())
                .select(TransitionRow::as_select())
                .load(conn)
        })
        .await?;
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
        let id = workflow.feature_id.clone();
        self.write(move |conn| {
            let key = row.feature_id.clone();
            let updated = diesel::update(
                workflows::table
                    .filter(workflows::feature_id.eq(&key))
                    .filter(workflows::version.eq(to_i64(expected_version))),
            )
            .set(&row)
            .execute(conn)?;
            if updated == 0 {
                let actual: Option<i64> = workflows::table
                    .find(&key)
                    .select(workflows::version)
                    .first(conn)
                    .optional()?;
                return Ok(Outcome::Refused(match actual {
                    Some(actual) => RepositoryError::VersionConflict {
                        expected: expected_version,
                        actual: u64::try_from(actual).unwrap_or(0),
                    },
                    None => RepositoryError::NotFound(id),
                }));
            }
            diesel::insert_into(transitions::table)
                .values(&history)
                .execute(conn)?;
            Ok(Outcome::Done)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError> {
        let key = feature_id.to_string();
        let found: Option<Option<String>> = Self::run(&self.read, move |conn| {
            workflows::table
                .find(key)
                .select(workflows::hub_session_id)
                .first(conn)
                .optional()
        })
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
        let key = feature_id.to_string();
        let expected = expected.map(|s| s.0.clone());
        let new = new.0.clone();
        let id = feature_id.clone();
        let stored = Self::run(&self.write, move |conn| {
            conn.immediate_transaction(|conn| {
                let current: Option<Option<String>> = workflows::table
                    .find(&key)
                    .select(workflows::hub_session_id)
                    .first(conn)
                    .optional()?;
                let Some(current) = current else {
                    return Ok(None);
                };
                if current != expected {
                    return Ok(Some(current.unwrap_or(new)));
                }
                diesel::update(workflows::table.find(&key))
                    .set(workflows::hub_session_id.eq(&new))
                    .execute(conn)?;
                Ok(Some(new))
            })
        })
        .await?;
        stored
            .map(HubSessionId)
            .ok_or(RepositoryError::NotFound(id))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn add_consultation(&self, consultation: &Consultation) -> Result<(), RepositoryError> {
        let row = ConsultationRow::from(consultation);
        let id = consultation.feature_id.clone();
        self.write(move |conn| {
            match diesel::insert_into(consultations::table)
                .values(&row)
                .execute(conn)
            {
                Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
                    Ok(Outcome::Refused(RepositoryError::NotFound(id)))
                }
                other => other.map(|_| Outcome::Done),
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %consultation.feature_id))]
    async fn update_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError> {
        let row = ConsultationRow::from(consultation);
        let pending = enum_text(&orchestrator_core::hub::AnswerStatus::PendingHuman);
        self.write(move |conn| {
            diesel::update(
                consultations::table
                    .find(&row.id)
                    .filter(consultations::status.eq(pending)),
            )
            .set(&row)
            .execute(conn)?;
            Ok(Outcome::Done)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(feature_id = %feature_id))]
    async fn consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>, RepositoryError> {
        let key = feature_id.to_string();
        let rows: Vec<ConsultationRow> = Self::run(&self.read, move |conn| {
            consultations::table
                .filter(consultations::feature_id.eq(key))
                .order((consultations::created_at.asc(), consultations::id.asc()))
                .select(ConsultationRow::as_select())
                .load(conn)
        })
        .await?;
        rows.into_iter()
            .map(|row| Consultation::try_from(row).map_err(corrupt))
            .collect()
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        Self::run(&self.read, |conn| {
            diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
        })
        .await
        .map_err(|e| match e {
            RepositoryError::Backend(inner) => RepositoryError::Unavailable(inner),
            other => other,
        })
    }
}
