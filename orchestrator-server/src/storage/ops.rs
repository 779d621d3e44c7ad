//! Every query, written once and compiled twice: blocking, for SQLite (`sqlite`: reads run
//! inline on a pooled connection, writes on the writer thread), and async, for PostgreSQL
//! (`postgres`).
//!
//! Reads return rows. A write runs inside a transaction its caller opened (a savepoint of the
//! SQLite writer's batch, or a PostgreSQL transaction) and returns what it decided as a
//! [`Written`]; a refusal writes nothing.

use orchestrator_core::{FeatureId, RepositoryError};

use super::models::{ConsultationRow, TransitionRow, WorkflowChanges, WorkflowRow};

/// One write, with everything it needs, owned (it may cross to the writer thread).
#[derive(Debug)]
pub enum Write {
    /// A new workflow with its first transition.
    Create(FeatureId, WorkflowRow, TransitionRow),
    /// The compare-and-set: the new snapshot and its history row, if the version is `expected`.
    Commit {
        /// The workflow.
        id: FeatureId,
        /// The version the change was based on.
        expected: i64,
        /// The snapshot's columns after the transition.
        changes: WorkflowChanges,
        /// The transition.
        history: TransitionRow,
    },
    /// Set a workflow's hub session if the stored one is `expected`.
    SwapSession {
        /// The feature id.
        feature_id: String,
        /// The session expected to be stored now.
        expected: Option<String>,
        /// The new session.
        new: String,
    },
    /// A new consultation of an existing workflow.
    AddConsultation(FeatureId, ConsultationRow),
    /// A refreshed consultation, stored only over a pending one.
    UpdateConsultation(ConsultationRow),
    /// Many new workflows at once (seeding).
    Import(Vec<WorkflowRow>, Vec<TransitionRow>),
    /// Rewrites the one probe row with this time (Unix microseconds): proves writes succeed.
    Probe(i64),
}

/// What a write decided.
#[derive(Debug)]
pub enum Written {
    /// Stored.
    Done,
    /// The hub session stored after a swap (`None`: no such workflow).
    Session(Option<Option<String>>),
    /// Refused by a rule; nothing was written.
    Refused(RepositoryError),
}

/// Generates the module of operations for one connection type. `[async]`/`[.await]` make it
/// the async flavour; `[]`/`[]` the blocking one.
macro_rules! ops {
    ($module:ident, $conn:ty, $run:path, [$($async:ident)?], [$($await:tt)*]) => {
        pub mod $module {
            use diesel::prelude::*;
            use diesel::result::QueryResult;
            // The blocking flavour gets `diesel::RunQueryDsl` from the prelude too; the async one
            // needs this import to take `diesel_async`'s in its place.
            #[allow(unused_imports)]
            use $run;
            use orchestrator_core::hub::AnswerStatus;
            use orchestrator_core::RepositoryError;

            use super::{Write, Written};
            use crate::storage::models::{enum_text, ConsultationRow, TransitionRow, WorkflowRow};
            use crate::storage::schema::{consultations, storage_probe, transitions, workflows};

            // Lookups by primary key use `get_result`, not `first`: `first` adds `LIMIT ?`, and
            // SQLite recompiles a statement whose LIMIT parameter is rebound on every run.

            /// One workflow's row.
            pub $($async)? fn get(conn: &mut $conn, feature_id: &str) -> QueryResult<Option<WorkflowRow>> {
                workflows::table
                    .find(feature_id)
                    .select(WorkflowRow::as_select())
                    .get_result(conn) $($await)*
                    .optional()
            }

            /// Up to `limit` rows in feature-id order, after `after`, in `state`.
            pub $($async)? fn list(
                conn: &mut $conn,
                state: Option<&str>,
                after: Option<&str>,
                limit: i64,
            ) -> QueryResult<Vec<WorkflowRow>> {
                let mut query = workflows::table
                    .select(WorkflowRow::as_select())
                    .order(workflows::feature_id.asc())
                    .limit(limit)
                    .into_boxed();
                if let Some(state) = state {
                    query = query.filter(workflows::state.eq(state));
                }
                if let Some(after) = after {
                    query = query.filter(workflows::feature_id.gt(after));
                }
                query.load(conn) $($await)*
            }

            /// `(state, count)` for every state that has workflows.
            pub $($async)? fn summary(conn: &mut $conn) -> QueryResult<Vec<(String, i64)>> {
                workflows::table
                    .group_by(workflows::state)
                    .select((workflows::state, diesel::dsl::count_star()))
                    .load(conn) $($await)*
            }

            /// A workflow's history rows, oldest first.
            pub $($async)? fn history(conn: &mut $conn, feature_id: &str) -> QueryResult<Vec<TransitionRow>> {
                transitions::table
                    .filter(transitions::feature_id.eq(feature_id))
                    .order(transitions::seq.asc())
                    .select(TransitionRow::as_select())
                    .load(conn) $($await)*
            }

            /// A workflow's hub session (`None`: no such workflow).
            pub $($async)? fn hub_session(conn: &mut $conn, feature_id: &str) -> QueryResult<Option<Option<String>>> {
                workflows::table
                    .find(feature_id)
                    .select(workflows::hub_session_id)
                    .get_result(conn) $($await)*
                    .optional()
            }

            /// A workflow's consultation rows, oldest first.
            pub $($async)? fn consultations(conn: &mut $conn, feature_id: &str) -> QueryResult<Vec<ConsultationRow>> {
                consultations::table
                    .filter(consultations::feature_id.eq(feature_id))
                    .order((consultations::created_at.asc(), consultations::id.asc()))
                    .select(ConsultationRow::as_select())
                    .load(conn) $($await)*
            }

            /// A trivial query: does the database answer?
            pub $($async)? fn ping(conn: &mut $conn) -> QueryResult<()> {
                diesel::sql_query("SELECT 1").execute(conn) $($await)* .map(|_| ())
            }

            /// Carries out one write on `conn`, inside the caller's transaction.
            pub $($async)? fn apply(conn: &mut $conn, write: &Write) -> QueryResult<Written> {
                match write {
                    Write::Create(id, row, history) => {
                        let inserted = diesel::insert_into(workflows::table)
                            .values(row)
                            .on_conflict_do_nothing()
                            .execute(conn) $($await)* ?;
                        if inserted == 0 {
                            return Ok(Written::Refused(RepositoryError::AlreadyExists(id.clone())));
                        }
                        diesel::insert_into(transitions::table).values(history).execute(conn) $($await)* ?;
                        Ok(Written::Done)
                    }
                    Write::Commit { id, expected, changes, history } => {
                        // Only the writer that still sees `expected` wins.
                        let updated = diesel::update(
                            workflows::table
                                .filter(workflows::feature_id.eq(id.as_str()))
                                .filter(workflows::version.eq(expected)),
                        )
                        .set(changes)
                        .execute(conn) $($await)* ?;
                        if updated == 0 {
                            let actual: Option<i64> = workflows::table
                                .find(id.as_str())
                                .select(workflows::version)
                                .get_result(conn) $($await)*
                                .optional()?;
                            return Ok(Written::Refused(super::conflict(id, *expected, actual)));
                        }
                        diesel::insert_into(transitions::table).values(history).execute(conn) $($await)* ?;
                        Ok(Written::Done)
                    }
                    Write::SwapSession { feature_id, expected, new } => {
                        let target = workflows::table.filter(workflows::feature_id.eq(feature_id));
                        let swap = diesel::update(target).set(workflows::hub_session_id.eq(new));
                        match expected {
                            None => swap.filter(workflows::hub_session_id.is_null()).execute(conn) $($await)* ?,
                            Some(old) => swap.filter(workflows::hub_session_id.eq(old)).execute(conn) $($await)* ?,
                        };
                        Ok(Written::Session(hub_session(conn, feature_id) $($await)* ?))
                    }
                    Write::AddConsultation(id, row) => {
                        let exists: Option<String> = workflows::table
                            .find(&row.feature_id)
                            .select(workflows::feature_id)
                            .get_result(conn) $($await)*
                            .optional()?;
                        if exists.is_none() {
                            return Ok(Written::Refused(RepositoryError::NotFound(id.clone())));
                        }
                        diesel::insert_into(consultations::table).values(row).execute(conn) $($await)* ?;
                        Ok(Written::Done)
                    }
                    Write::UpdateConsultation(row) => {
                        let pending = enum_text(&AnswerStatus::PendingHuman);
                        diesel::update(
                            consultations::table
                                .find(&row.id)
                                .filter(consultations::status.eq(pending)),
                        )
                        .set(row)
                        .execute(conn) $($await)* ?;
                        Ok(Written::Done)
                    }
                    Write::Probe(at) => {
                        diesel::insert_into(storage_probe::table)
                            .values((storage_probe::id.eq(1), storage_probe::at.eq(at)))
                            .on_conflict(storage_probe::id)
                            .do_update()
                            .set(storage_probe::at.eq(at))
                            .execute(conn) $($await)* ?;
                        Ok(Written::Done)
                    }
                    Write::Import(rows, history) => {
                        // One row per statement: SQLite cannot take these rows in one.
                        for row in rows {
                            diesel::insert_into(workflows::table).values(row).execute(conn) $($await)* ?;
                        }
                        for row in history {
                            diesel::insert_into(transitions::table).values(row).execute(conn) $($await)* ?;
                        }
                        Ok(Written::Done)
                    }
                }
            }
        }
    };
}

ops!(
    sqlite,
    diesel::SqliteConnection,
    diesel::RunQueryDsl,
    [],
    []
);
ops!(postgres, diesel_async::AsyncPgConnection, diesel_async::RunQueryDsl, [async], [.await]);

/// The refusal of a compare-and-set that updated nothing.
fn conflict(id: &FeatureId, expected: i64, actual: Option<i64>) -> RepositoryError {
    match actual {
        Some(actual) => RepositoryError::VersionConflict {
            expected: u64::try_from(expected).unwrap_or(0),
            actual: u64::try_from(actual).unwrap_or(0),
        },
        None => RepositoryError::NotFound(id.clone()),
    }
}
