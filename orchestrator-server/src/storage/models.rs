//! Row types and their conversions to and from core types. Private to `storage`: HTTP never
//! sees a row and core never sees a table.

use std::collections::BTreeMap;

use chrono::DateTime;
use diesel::prelude::*;
use orchestrator_core::{
    Actor, Description, FeatureId, Metadata, Reason, Timestamp, Transition, Trigger, Workflow,
    WorkflowState,
};

use super::schema::{transitions, workflows};

/// A stored value that does not parse back into a core type: a corrupt or foreign row.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {table} row '{key}': {problem}")]
pub struct CorruptRow {
    table: &'static str,
    key: String,
    problem: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = workflows)]
#[diesel(treat_none_as_null = true)]
pub struct WorkflowRow {
    pub feature_id: String,
    pub description: String,
    pub metadata: String,
    pub state: String,
    pub version: i64,
    pub rework_count: i64,
    pub time_in_state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = transitions)]
pub struct TransitionRow {
    pub feature_id: String,
    pub seq: i64,
    pub from_state: String,
    pub to_state: String,
    pub trigger: String,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub metadata: String,
    pub at: i64,
}

pub fn micros(at: Timestamp) -> i64 {
    at.timestamp_micros()
}

/// Versions and counts are far below `i64::MAX`; saturate rather than wrap if one is not.
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn json(value: &impl serde::Serialize) -> String {
    // Serialising a map of strings and JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

impl From<&Workflow> for WorkflowRow {
    fn from(w: &Workflow) -> Self {
        WorkflowRow {
            feature_id: w.feature_id.to_string(),
            description: w.description.to_string(),
            metadata: json(&w.metadata),
            state: w.state.as_str().to_owned(),
            version: to_i64(w.version),
            rework_count: i64::from(w.rework_count),
            time_in_state: json(&w.time_in_state),
            created_at: micros(w.created_at),
            updated_at: micros(w.updated_at),
            completed_at: w.completed_at.map(micros),
        }
    }
}

impl TransitionRow {
    pub fn new(feature_id: &FeatureId, t: &Transition) -> Self {
        TransitionRow {
            feature_id: feature_id.to_string(),
            seq: to_i64(t.seq),
            from_state: t.from.as_str().to_owned(),
            to_state: t.to.as_str().to_owned(),
            trigger: t.trigger.as_str().to_owned(),
            actor: t.actor.as_ref().map(ToString::to_string),
            reason: t.reason.as_ref().map(ToString::to_string),
            metadata: json(&t.metadata),
            at: micros(t.at),
        }
    }
}

/// Parses one column of a row, naming the row and the column on failure.
struct Columns<'a> {
    table: &'static str,
    key: &'a str,
}

impl Columns<'_> {
    fn fail(&self, column: &str, problem: impl std::fmt::Display) -> CorruptRow {
        CorruptRow {
            table: self.table,
            key: self.key.to_owned(),
            problem: format!("{column}: {problem}"),
        }
    }

    fn parse<T, E: std::fmt::Display>(
        &self,
        column: &str,
        result: Result<T, E>,
    ) -> Result<T, CorruptRow> {
        result.map_err(|e| self.fail(column, e))
    }

    fn time(&self, column: &str, micros: i64) -> Result<Timestamp, CorruptRow> {
        DateTime::from_timestamp_micros(micros).ok_or_else(|| self.fail(column, "out of range"))
    }

    fn metadata(&self, column: &str, text: &str) -> Result<Metadata, CorruptRow> {
        let value = self.parse(column, serde_json::from_str(text))?;
        self.parse(column, Metadata::parse(value))
    }
}

impl TryFrom<WorkflowRow> for Workflow {
    type Error = CorruptRow;

    fn try_from(row: WorkflowRow) -> Result<Self, CorruptRow> {
        let c = Columns {
            table: "workflows",
            key: &row.feature_id,
        };
        let time_in_state: BTreeMap<WorkflowState, u64> =
            c.parse("time_in_state", serde_json::from_str(&row.time_in_state))?;
        Ok(Workflow {
            feature_id: c.parse("feature_id", FeatureId::parse(row.feature_id.as_str()))?,
            description: c.parse("description", Description::parse(row.description.as_str()))?,
            metadata: c.metadata("metadata", &row.metadata)?,
            state: c.parse("state", row.state.parse())?,
            version: c.parse("version", u64::try_from(row.version))?,
            rework_count: c.parse("rework_count", u32::try_from(row.rework_count))?,
            time_in_state,
            created_at: c.time("created_at", row.created_at)?,
            updated_at: c.time("updated_at", row.updated_at)?,
            completed_at: row
                .completed_at
                .map(|at| c.time("completed_at", at))
                .transpose()?,
        })
    }
}

impl TryFrom<TransitionRow> for Transition {
    type Error = CorruptRow;

    fn try_from(row: TransitionRow) -> Result<Self, CorruptRow> {
        let key = format!("{}#{}", row.feature_id, row.seq);
        let c = Columns {
            table: "transitions",
            key: &key,
        };
        Ok(Transition {
            seq: c.parse("seq", u64::try_from(row.seq))?,
            from: c.parse("from_state", row.from_state.parse())?,
            to: c.parse("to_state", row.to_state.parse())?,
            trigger: c.parse("trigger", row.trigger.parse::<Trigger>())?,
            actor: row
                .actor
                .map(|a| c.parse("actor", Actor::parse(a)))
                .transpose()?,
            reason: row
                .reason
                .map(|r| c.parse("reason", Reason::parse(r)))
                .transpose()?,
            metadata: c.metadata("metadata", &row.metadata)?,
            at: c.time("at", row.at)?,
        })
    }
}
