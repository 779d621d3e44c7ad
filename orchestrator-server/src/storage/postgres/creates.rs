//! New workflows, many in one statement: the creation batch of the commit queue (`commits`).
//!
//! Each new workflow writes its row, its first history entry and its `workflow.transitioned`
//! event, and the event takes the event log's row lock, held until the commit. Created one
//! transaction each, features therefore started one commit at a time; created together, a
//! batch shares that lock and one commit. A feature that already exists is left as it is and
//! refused alone (`AlreadyExists`); the others of the batch are created.

use diesel::pg::Pg;
use diesel::query_builder::AstPass;
use diesel::result::QueryResult;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orchestrator_core::{FeatureId, RepositoryError};

use super::commits::{ENTRY_COLUMNS, Entries, HELD, ROWS_HEAD, WRITTEN};
use super::{Prepared, Statement, bind_array, column};
use crate::storage::models::{ReceiptRow, TransitionRow, WorkflowRow};
use crate::storage::write::{Written, taken_over};

/// A new workflow with its first history entry, and the answer to keep for the request's
/// idempotency key. Its event is the entry's `workflow.transitioned`, written by the statement.
#[derive(Debug)]
pub struct Creation {
    /// The workflow's id (also in `row`).
    pub feature_id: FeatureId,
    /// The workflow as stored.
    pub row: WorkflowRow,
    /// Its first history entry.
    pub first: TransitionRow,
    /// The answer to keep, if the request had an idempotency key.
    pub receipt: Option<ReceiptRow>,
}

/// Creates `creations` (distinct workflows) in one statement on `conn`; the results line up
/// with them: `Done`, `KeyTakenOver` for one whose key a retry took over, or `AlreadyExists`
/// for a workflow that was there before.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    creations: &[&Creation],
) -> QueryResult<Vec<Written>> {
    let created: Vec<Created> = Prepared(Creations::new(creations)).load(conn).await?;
    let created: std::collections::HashMap<String, Created> = created
        .into_iter()
        .map(|c| (c.feature_id.clone(), c))
        .collect();
    Ok(creations
        .iter()
        .map(|c| match created.get(c.feature_id.as_str()) {
            Some(done) if done.won => Written::Done,
            Some(refused) if !refused.held => Written::Refused(taken_over(c.receipt.as_ref())),
            _ => Written::Refused(RepositoryError::AlreadyExists(c.feature_id.clone())),
        })
        .collect())
}

/// The creation statement is [`ROWS_HEAD`], its parameters (the columns as arrays),
/// [`CREATE_COLUMNS`] and [`ENTRY_COLUMNS`] (the names of `v`'s columns), [`HELD`],
/// [`CREATE_TAIL`], [`WRITTEN`] and [`CREATE_RESULT`].
///
/// The names of the creation batch's own columns in `v`; [`ENTRY_COLUMNS`] follow.
const CREATE_COLUMNS: &str = ")
        AS v(feature_id, description, workflow_metadata, state, version, rework_count,
             time_in_state, created_at, updated_at, completed_at, gate_policy, gate_stay,
             gate_due_at, ";
/// The creation statement after its parameters, up to what it shares with the advance batch:
/// `won` holds the workflows inserted, in feature-id order (so two batches that name the same
/// new ids wait for each other in one order, never in a cycle).
const CREATE_TAIL: &str = r#"), won AS (
    INSERT INTO workflows (feature_id, description, metadata, state, version, rework_count,
                           time_in_state, created_at, updated_at, completed_at, gate_policy,
                           gate_stay, gate_due_at)
    SELECT feature_id, description, workflow_metadata, state, version, rework_count,
           time_in_state, created_at, updated_at, completed_at, gate_policy, gate_stay,
           gate_due_at
    FROM v
    -- After `held` (the reference makes it run first): keys, then workflows.
    WHERE (SELECT count(*) FROM held) >= 0
      AND (v.receipt_scope IS NULL
           OR EXISTS (SELECT 1 FROM held WHERE held.feature_id = v.feature_id))
    ORDER BY feature_id
    ON CONFLICT DO NOTHING
    RETURNING feature_id
"#;
/// The creation statement's result: per workflow, whether this statement inserted it and
/// whether its key's claim (if it had one) still held the key.
const CREATE_RESULT: &str = "SELECT v.feature_id, won.feature_id IS NOT NULL AS won,
       (v.receipt_scope IS NULL
        OR EXISTS (SELECT 1 FROM held WHERE held.feature_id = v.feature_id)) AS held
FROM v
LEFT JOIN won ON won.feature_id = v.feature_id
";

/// What the statement did for one workflow.
#[derive(diesel::QueryableByName)]
struct Created {
    #[diesel(sql_type = Text)]
    feature_id: String,
    #[diesel(sql_type = Bool)]
    won: bool,
    #[diesel(sql_type = Bool)]
    held: bool,
}

/// One creation batch's columns, bound to the creation statement (prepared once per
/// connection).
struct Creations {
    feature_id: Vec<String>,
    description: Vec<String>,
    workflow_metadata: Vec<String>,
    state: Vec<String>,
    version: Vec<i64>,
    rework_count: Vec<i64>,
    time_in_state: Vec<String>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    completed_at: Vec<Option<i64>>,
    gate_policy: Vec<String>,
    gate_stay: Vec<Option<String>>,
    gate_due_at: Vec<Option<i64>>,
    entries: Entries,
}

impl Creations {
    fn new(creations: &[&Creation]) -> Self {
        Creations {
            feature_id: column(creations, |c| c.row.feature_id.clone()),
            description: column(creations, |c| c.row.description.clone()),
            workflow_metadata: column(creations, |c| c.row.metadata.clone()),
            state: column(creations, |c| c.row.state.clone()),
            version: column(creations, |c| c.row.version),
            rework_count: column(creations, |c| c.row.rework_count),
            time_in_state: column(creations, |c| c.row.time_in_state.clone()),
            created_at: column(creations, |c| c.row.created_at),
            updated_at: column(creations, |c| c.row.updated_at),
            completed_at: column(creations, |c| c.row.completed_at),
            gate_policy: column(creations, |c| c.row.gate_policy.clone()),
            gate_stay: column(creations, |c| c.row.gate_stay.clone()),
            gate_due_at: column(creations, |c| c.row.gate_due_at),
            entries: Entries::new(&column(creations, |c| (&c.first, c.receipt.as_ref()))),
        }
    }
}

impl Statement for Creations {
    fn walk<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        type Texts = Array<Text>;
        type MaybeTexts = Array<Nullable<Text>>;
        type Numbers = Array<BigInt>;
        type MaybeNumbers = Array<Nullable<BigInt>>;
        out.push_sql(ROWS_HEAD);
        bind_array::<Texts, _>(&mut out, &self.feature_id, "::text[], ")?;
        bind_array::<Texts, _>(&mut out, &self.description, "::text[], ")?;
        bind_array::<Texts, _>(&mut out, &self.workflow_metadata, "::text[], ")?;
        bind_array::<Texts, _>(&mut out, &self.state, "::text[], ")?;
        bind_array::<Numbers, _>(&mut out, &self.version, "::bigint[], ")?;
        bind_array::<Numbers, _>(&mut out, &self.rework_count, "::bigint[], ")?;
        bind_array::<Texts, _>(&mut out, &self.time_in_state, "::text[], ")?;
        bind_array::<Numbers, _>(&mut out, &self.created_at, "::bigint[], ")?;
        bind_array::<Numbers, _>(&mut out, &self.updated_at, "::bigint[], ")?;
        bind_array::<MaybeNumbers, _>(&mut out, &self.completed_at, "::bigint[], ")?;
        bind_array::<Texts, _>(&mut out, &self.gate_policy, "::text[], ")?;
        bind_array::<MaybeTexts, _>(&mut out, &self.gate_stay, "::text[], ")?;
        bind_array::<MaybeNumbers, _>(&mut out, &self.gate_due_at, "::bigint[], ")?;
        self.entries.walk(&mut out)?;
        out.push_sql(CREATE_COLUMNS);
        out.push_sql(ENTRY_COLUMNS);
        out.push_sql(HELD);
        out.push_sql(CREATE_TAIL);
        out.push_sql(WRITTEN);
        out.push_sql(CREATE_RESULT);
        Ok(())
    }
}
