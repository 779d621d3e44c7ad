//! Row types and their conversions to and from core types. Private to `storage`: HTTP never
//! sees a row and core never sees a table.

use std::collections::BTreeMap;
use std::fmt;

use chrono::DateTime;
use diesel::prelude::*;
use orchestrator_core::api;
use orchestrator_core::consultation::{ConsultationError, ConsultationStatus};
use orchestrator_core::hub::{EscalationId, Topic};
use orchestrator_core::webhook::{DeliveryStatus, WebhookSecret};
use orchestrator_core::{
    Actor, ActorKind, Consultation, ConsultationId, Description, FeatureId, Metadata, OverdueNote,
    Question, Reason, RepositoryError, Snapshot, StateCounts, Timestamp, Transition, Trigger,
    Workflow, WorkflowState,
};
use orchestrator_core::{Event, EventFilter, EventSlice, EventType, NewEvent, Receipt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::schema::{
    consultations, events, gate_overdue_notes, idempotency_keys, transitions, webhook_deliveries,
    webhooks, workflows,
};
use super::write::Write;

/// A stored value that does not parse back into a core type: a corrupt or foreign row.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {table} row '{key}': {problem}")]
pub struct CorruptRow {
    table: &'static str,
    key: String,
    problem: String,
}

/// A whole workflow row, as inserted and read. Never used as an update: see [`WorkflowChanges`].
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflows)]
#[diesel(treat_none_as_default_value = false)]
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
    pub gate_policy: String,
    pub gate_stay: Option<String>,
    pub gate_due_at: Option<i64>,
}

/// What a transition changes in a workflow row. It leaves out `feature_id`: setting the key
/// that `transitions` references, even to its own value, makes SQLite check every history
/// row of the workflow, so each advance would cost more the longer the history.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = workflows)]
#[diesel(treat_none_as_null = true)]
pub struct WorkflowChanges {
    pub state: String,
    pub version: i64,
    pub rework_count: i64,
    pub time_in_state: String,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub gate_stay: Option<String>,
    pub gate_due_at: Option<i64>,
}

impl From<&Workflow> for WorkflowChanges {
    fn from(w: &Workflow) -> Self {
        WorkflowChanges {
            state: w.state().as_str().to_owned(),
            version: to_i64(w.version()),
            rework_count: i64::from(w.rework_count()),
            time_in_state: json(&w.time_in_state()),
            updated_at: micros(w.updated_at()),
            completed_at: w.completed_at().map(micros),
            gate_stay: w.gate_stay().map(json),
            gate_due_at: w.gate_due_at().map(micros),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = transitions)]
#[diesel(treat_none_as_default_value = false)]
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
    pub actor_kind: Option<String>,
    pub on_behalf_of: Option<String>,
    pub gate_override: bool,
}

/// A newly claimed idempotency key.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = idempotency_keys)]
#[diesel(treat_none_as_null = true)]
pub struct KeyRow {
    pub scope: String,
    pub name: String,
    pub fingerprint: String,
    pub answer: Option<String>,
    pub created_at: i64,
    pub lease_until: i64,
}

/// The answer to store for a key, by the claim that took the lease `lease_until` (Unix
/// microseconds): stored only while that claim still holds the key. Its `Debug` leaves the
/// answer out: a webhook's creation answer holds the webhook's secret.
#[derive(Clone)]
pub struct ReceiptRow {
    pub scope: String,
    pub name: String,
    pub lease_until: i64,
    pub answer: String,
}

impl std::fmt::Debug for ReceiptRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptRow")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("lease_until", &self.lease_until)
            .field("answer", &format_args!("<{} bytes>", self.answer.len()))
            .finish()
    }
}

impl From<&Receipt> for ReceiptRow {
    fn from(receipt: &Receipt) -> Self {
        ReceiptRow {
            scope: receipt.key.scope.clone(),
            name: receipt.key.key.clone(),
            lease_until: micros(receipt.lease_until),
            answer: receipt.answer.clone(),
        }
    }
}

/// The note that a stay at the gate went past its deadline.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = gate_overdue_notes)]
pub struct OverdueNoteRow {
    pub feature_id: String,
    pub due_at: i64,
    pub noted_at: i64,
    pub on_expiry: String,
}

impl From<&OverdueNote> for OverdueNoteRow {
    fn from(note: &OverdueNote) -> Self {
        OverdueNoteRow {
            feature_id: note.feature_id.to_string(),
            due_at: micros(note.due_at),
            noted_at: micros(note.noted_at),
            on_expiry: note.on_expiry.as_str().to_owned(),
        }
    }
}

/// An event before the store numbers it: the columns of [`EventRow`] but its id.
#[derive(Debug, Clone)]
pub struct NewEventRow {
    pub event_type: String,
    pub subject: String,
    pub time: i64,
    pub data: String,
    pub seq: Option<i64>,
}

impl From<&NewEvent> for NewEventRow {
    fn from(event: &NewEvent) -> Self {
        NewEventRow {
            event_type: event.event_type.as_str().to_owned(),
            subject: event.subject.to_string(),
            time: micros(event.time),
            data: event.data.clone(),
            seq: None,
        }
    }
}

impl NewEventRow {
    /// The `workflow.transitioned` event of `transition`: a reference to the history entry
    /// written beside it (its data is rebuilt from the entry when read).
    pub fn transitioned(feature_id: &FeatureId, transition: &Transition) -> Self {
        NewEventRow {
            event_type: EventType::WorkflowTransitioned.as_str().to_owned(),
            subject: feature_id.to_string(),
            time: micros(transition.at),
            data: String::new(),
            seq: Some(to_i64(transition.seq)),
        }
    }

    /// The row numbered `id`.
    pub fn numbered(&self, id: i64) -> EventRow {
        EventRow {
            id,
            event_type: self.event_type.clone(),
            subject: self.subject.clone(),
            time: self.time,
            data: self.data.clone(),
            seq: self.seq,
        }
    }
}

/// One event, as inserted and read. `id` stays the first field: a workflow's events are
/// merged in the order of the first column read (`ops::events` of each back end).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = events)]
#[diesel(treat_none_as_default_value = false)]
pub struct EventRow {
    pub id: i64,
    pub event_type: String,
    pub subject: String,
    pub time: i64,
    pub data: String,
    pub seq: Option<i64>,
}

/// An event row as read, with the history entry it refers to (if it refers to one).
pub type EventWithEntry = (EventRow, Option<TransitionRow>);

/// An event as read: its row, and the history entry it refers to, if it refers to one.
pub struct StoredEvent(pub EventRow, pub Option<TransitionRow>);

impl From<EventWithEntry> for StoredEvent {
    fn from((row, entry): EventWithEntry) -> Self {
        StoredEvent(row, entry)
    }
}

/// The event `row` holds, or `None` (logged) if it does not decode (a damaged row; for
/// webhooks, which read every type, also a type a newer version wrote before a downgrade):
/// passed over, for one such row must not stop every reader of the log (the event pages and
/// stream, webhooks, and retention, which waits for the webhooks' marks), as a 500 on each
/// read would.
fn readable_event(row: EventWithEntry) -> Option<Event> {
    let id = row.0.id;
    Event::try_from(StoredEvent::from(row))
        .inspect_err(|problem| {
            tracing::error!(event_id = id, %problem, "an event that does not decode is passed over");
        })
        .ok()
}

impl TryFrom<StoredEvent> for Event {
    type Error = CorruptRow;

    fn try_from(StoredEvent(row, entry): StoredEvent) -> Result<Self, CorruptRow> {
        let key = row.id.to_string();
        let c = Columns {
            table: "events",
            key: &key,
        };
        let subject = c.parse("subject", FeatureId::parse(row.subject))?;
        let data = match (row.seq, entry) {
            (None, _) => row.data,
            (Some(_), Some(entry)) => {
                NewEvent::transitioned_data(&subject, &Transition::try_from(entry)?)
            }
            (Some(seq), None) => return Err(c.fail("seq", format!("no history entry {seq}"))),
        };
        Ok(Event {
            id: c.parse("id", u64::try_from(row.id))?,
            event: NewEvent {
                event_type: EventType::parse(&row.event_type)
                    .ok_or_else(|| c.fail("event_type", "unknown type"))?,
                subject,
                time: c.time("time", row.time)?,
                data,
            },
        })
    }
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
            feature_id: w.feature_id().to_string(),
            description: w.description().to_string(),
            metadata: json(&w.metadata()),
            state: w.state().as_str().to_owned(),
            version: to_i64(w.version()),
            rework_count: i64::from(w.rework_count()),
            time_in_state: json(&w.time_in_state()),
            created_at: micros(w.created_at()),
            updated_at: micros(w.updated_at()),
            completed_at: w.completed_at().map(micros),
            gate_policy: json(&w.gate_policy()),
            gate_stay: w.gate_stay().map(json),
            gate_due_at: w.gate_due_at().map(micros),
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
            actor_kind: t.actor_kind.map(|k| k.as_str().to_owned()),
            on_behalf_of: t.on_behalf_of.as_ref().map(ToString::to_string),
            gate_override: t.override_gate,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = consultations)]
#[diesel(treat_none_as_null = true)]
pub struct ConsultationRow {
    pub id: String,
    pub feature_id: String,
    pub topic: String,
    pub question: String,
    pub context: Option<String>,
    pub answer: String,
    pub rationale: Option<String>,
    pub confidence: i64,
    pub status: String,
    pub escalation_id: Option<String>,
    pub final_answer: Option<String>,
    pub human_action: Option<String>,
    pub human_response: Option<String>,
    pub asked_in_state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub uncertainty_reasons: String,
    pub human_responder: Option<String>,
    pub resolved_at: Option<i64>,
    /// False while the row is a reservation no reader sees.
    pub visible: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// The wire name of a unit enum (`pending_human`, `confirm`, …), as serde spells it.
pub fn enum_text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

impl ConsultationRow {
    /// The row of `c`, seen by readers or a reservation.
    pub fn new(c: &Consultation, visible: bool) -> Self {
        ConsultationRow {
            id: c.id.to_string(),
            feature_id: c.feature_id.to_string(),
            topic: c.topic.to_string(),
            question: c.question.as_str().to_owned(),
            context: c.context.clone(),
            // No answer yet (or ever): stored empty, read back as none by its status.
            answer: c.answer.clone().unwrap_or_default(),
            rationale: c.rationale.clone(),
            confidence: i64::from(c.confidence.unwrap_or(0)),
            status: enum_text(&c.status),
            escalation_id: c.escalation_id.as_ref().map(|e| e.0.clone()),
            final_answer: c.final_answer.clone(),
            human_action: c.human_action.as_ref().map(enum_text),
            human_response: c.human_response.clone(),
            asked_in_state: c.asked_in_state.as_str().to_owned(),
            created_at: micros(c.created_at),
            updated_at: micros(c.updated_at),
            uncertainty_reasons: json(&c.uncertainty_reasons),
            human_responder: c.human_responder.clone(),
            resolved_at: c.resolved_at.map(micros),
            visible,
            error_code: c.error.as_ref().map(|e| e.code.clone()),
            error_message: c.error.as_ref().map(|e| e.message.clone()),
        }
    }
}

impl TryFrom<ConsultationRow> for Consultation {
    type Error = CorruptRow;

    fn try_from(row: ConsultationRow) -> Result<Self, CorruptRow> {
        let c = Columns {
            table: "consultations",
            key: &row.id,
        };
        let status: ConsultationStatus = c.wire_enum("status", &row.status)?;
        let answered = !matches!(
            status,
            ConsultationStatus::Asking | ConsultationStatus::Failed
        );
        let error = match (row.error_code, row.error_message) {
            (Some(code), message) => Some(ConsultationError {
                code,
                message: message.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        Ok(Consultation {
            id: ConsultationId(c.parse("id", uuid::Uuid::parse_str(&row.id))?),
            feature_id: c.parse("feature_id", FeatureId::parse(row.feature_id.as_str()))?,
            topic: c.parse("topic", Topic::parse(row.topic.as_str()))?,
            question: c.parse("question", Question::parse(row.question.as_str()))?,
            context: row.context,
            answer: answered.then_some(row.answer),
            rationale: row.rationale,
            confidence: answered
                .then(|| c.parse("confidence", u8::try_from(row.confidence)))
                .transpose()?,
            status,
            escalation_id: row.escalation_id.map(EscalationId),
            final_answer: row.final_answer,
            human_action: row
                .human_action
                .map(|a| c.wire_enum("human_action", &a))
                .transpose()?,
            human_response: row.human_response,
            uncertainty_reasons: c.parse(
                "uncertainty_reasons",
                serde_json::from_str(&row.uncertainty_reasons),
            )?,
            human_responder: row.human_responder,
            resolved_at: row
                .resolved_at
                .map(|at| c.time("resolved_at", at))
                .transpose()?,
            error,
            asked_in_state: c.parse("asked_in_state", row.asked_in_state.parse())?,
            created_at: c.time("created_at", row.created_at)?,
            updated_at: c.time("updated_at", row.updated_at)?,
        })
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

    fn wire_enum<T: DeserializeOwned>(&self, column: &str, text: &str) -> Result<T, CorruptRow> {
        self.parse(
            column,
            serde_json::from_value(serde_json::Value::String(text.to_owned())),
        )
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
        Ok(Workflow::from_snapshot(Snapshot {
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
            gate_policy: c.parse("gate_policy", serde_json::from_str(&row.gate_policy))?,
            gate_stay: row
                .gate_stay
                .map(|stay| c.parse("gate_stay", serde_json::from_str(&stay)))
                .transpose()?,
        }))
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
            actor_kind: row
                .actor_kind
                .map(|k| c.parse("actor_kind", k.parse::<ActorKind>()))
                .transpose()?,
            on_behalf_of: row
                .on_behalf_of
                .map(|a| c.parse("on_behalf_of", Actor::parse(a)))
                .transpose()?,
            reason: row
                .reason
                .map(|r| c.parse("reason", Reason::parse(r)))
                .transpose()?,
            metadata: c.metadata("metadata", &row.metadata)?,
            override_gate: row.gate_override,
            at: c.time("at", row.at)?,
        })
    }
}

/// The states a page may hold: the one asked for, or all five.
pub fn states(state: Option<WorkflowState>) -> Vec<&'static str> {
    match state {
        Some(state) => vec![state.as_str()],
        None => WorkflowState::ALL.iter().map(|s| s.as_str()).collect(),
    }
}

/// How long a webhook's enqueueing on this version waits, in microseconds, for a newer
/// replica to enqueue an event of a type it does not know (see [`WebhookRow::deliveries`]).
pub const UNKNOWN_TYPE_WAIT: i64 = 15 * 60 * 1_000_000;

/// A webhook, as inserted and read. `Debug` leaves the secret out.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks)]
#[diesel(treat_none_as_default_value = false)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    pub event_types: String,
    pub description: Option<String>,
    pub secret: String,
    pub created_at: i64,
    pub enqueued_through: i64,
}

impl fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("description", &self.description)
            .field("secret", &"…")
            .field("created_at", &self.created_at)
            .field("enqueued_through", &self.enqueued_through)
            .finish()
    }
}

impl WebhookRow {
    /// The row of a new webhook; the store sets `enqueued_through` to the log's last id.
    pub fn new(webhook: &api::Webhook, secret: &WebhookSecret) -> Self {
        let types: Vec<&str> = webhook.event_types.iter().map(|t| t.as_str()).collect();
        WebhookRow {
            id: webhook.id.clone(),
            url: webhook.url.clone(),
            event_types: types.join(" "),
            description: webhook.description.clone(),
            secret: secret.expose().to_owned(),
            created_at: micros(webhook.created_at),
            enqueued_through: 0,
        }
    }

    /// The types the webhook takes (none: every type). A name this version does not know (a
    /// newer one stored it, before a downgrade) is left out, so the webhook still takes the
    /// types it knows; a webhook that names only such types takes none of this version's
    /// events, not all of them, so it does not decode.
    fn types(&self) -> Result<Vec<EventType>, CorruptRow> {
        let names: Vec<&str> = self.event_types.split_whitespace().collect();
        let known: Vec<EventType> = names.iter().filter_map(|n| EventType::parse(n)).collect();
        if known.is_empty() && !names.is_empty() {
            return Err(CorruptRow {
                table: "webhooks",
                key: self.id.clone(),
                problem: format!(
                    "event_types: no type this version knows: {}",
                    self.event_types
                ),
            });
        }
        Ok(known)
    }

    /// The deliveries of the events in `rows` (read after `enqueued_through`, in id order)
    /// that this webhook takes, made at `now`, the last event id read and how many rows were
    /// read through it — the last before an event of a type this version does not know that
    /// the webhook may take, dated
    /// less than [`UNKNOWN_TYPE_WAIT`] ago: a newer replica beside this one (a rolling
    /// upgrade) wrote it and enqueues it. Older, it is passed over, as a row that does not
    /// decode is (after a downgrade no replica knows it).
    pub fn deliveries(
        &self,
        rows: Vec<EventWithEntry>,
        now: i64,
    ) -> Result<(Vec<DeliveryRow>, i64, usize), RepositoryError> {
        let types = self.types().map_err(corrupt)?;
        let mut through = self.enqueued_through;
        let mut deliveries = Vec::new();
        let mut passed = 0;
        for row in rows {
            let kind = &row.0.event_type;
            let may_take =
                types.is_empty() || self.event_types.split_whitespace().any(|n| n == kind);
            // (An event dated ahead of this clock, by a replica whose clock runs ahead, waits
            // as long; one dated far off either way is passed over.)
            let age = now.saturating_sub(row.0.time).unsigned_abs();
            if EventType::parse(kind).is_none()
                && may_take
                && age < UNKNOWN_TYPE_WAIT.unsigned_abs()
            {
                break;
            }
            passed += 1;
            through = through.max(row.0.id);
            let Some(event) = readable_event(row) else {
                continue;
            };
            if !types.is_empty() && !types.contains(&event.event.event_type) {
                continue;
            }
            let payload = serde_json::to_string(&api::CloudEvent::from(&event))
                .map_err(|e| RepositoryError::Backend(Box::new(e)))?;
            deliveries.push(DeliveryRow {
                id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                webhook_id: self.id.clone(),
                event_id: to_i64(event.id),
                event_type: event.event.event_type.as_str().to_owned(),
                payload,
                status: DeliveryStatus::Pending.as_str().to_owned(),
                attempts: 0,
                last_status_code: None,
                last_error: None,
                next_attempt_at: Some(now),
                delivered_at: None,
                lease_until: None,
                created_at: now,
                schedule_from: 0,
                redeliveries: 0,
            });
        }
        Ok((deliveries, through, passed))
    }
}

impl TryFrom<WebhookRow> for api::Webhook {
    type Error = CorruptRow;

    fn try_from(row: WebhookRow) -> Result<Self, CorruptRow> {
        let c = Columns {
            table: "webhooks",
            key: &row.id,
        };
        Ok(api::Webhook {
            event_types: row.types()?,
            created_at: c.time("created_at", row.created_at)?,
            id: row.id,
            url: row.url,
            description: row.description,
        })
    }
}

/// One delivery, as inserted and read.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_deliveries)]
#[diesel(treat_none_as_default_value = false)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_id: i64,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub schedule_from: i32,
    pub redeliveries: i32,
}

/// A delivery as its webhook's listing reads it: the columns the answer shows, not the event's
/// payload (up to megabytes each, and a page holds up to 500).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct ListedDeliveryRow {
    pub id: String,
    pub event_id: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
}

impl TryFrom<ListedDeliveryRow> for api::Delivery {
    type Error = CorruptRow;

    fn try_from(row: ListedDeliveryRow) -> Result<Self, CorruptRow> {
        let c = Columns {
            table: "webhook_deliveries",
            key: &row.id,
        };
        let time = |column, at: Option<i64>| at.map(|at| c.time(column, at)).transpose();
        Ok(api::Delivery {
            event_id: row.event_id.to_string(),
            event_type: EventType::parse(&row.event_type)
                .ok_or_else(|| c.fail("event_type", "unknown type"))?,
            status: DeliveryStatus::parse(&row.status)
                .ok_or_else(|| c.fail("status", "unknown status"))?,
            attempts: c.parse("attempts", u32::try_from(row.attempts))?,
            last_status_code: row
                .last_status_code
                .map(|code| c.parse("last_status_code", u16::try_from(code)))
                .transpose()?,
            next_attempt_at: time("next_attempt_at", row.next_attempt_at)?,
            delivered_at: time("delivered_at", row.delivered_at)?,
            created_at: c.time("created_at", row.created_at)?,
            last_error: row.last_error,
            id: row.id,
        })
    }
}

/// A claimed delivery with its webhook's URL and secret, as read.
pub type DueRow = (DeliveryRow, (String, String));

fn corrupt(error: CorruptRow) -> RepositoryError {
    RepositoryError::Backend(Box::new(error))
}

/// Rows into core values; a row that does not decode is a corrupt store (a bug, 500).
pub fn convert<R, T: TryFrom<R, Error = CorruptRow>>(
    rows: Vec<R>,
) -> Result<Vec<T>, RepositoryError> {
    rows.into_iter()
        .map(|row| T::try_from(row).map_err(corrupt))
        .collect()
}

/// The webhooks `rows` hold; one that does not decode is passed over and logged (once per
/// process: the worker lists them every round that finds new events), for it must not stop
/// every other webhook's deliveries.
pub fn readable_webhooks(rows: Vec<WebhookRow>) -> Vec<api::Webhook> {
    readable(
        rows,
        |row| row.id.clone(),
        |webhook_id, problem| {
            tracing::error!(%webhook_id, %problem, "a webhook that does not decode is passed over; it holds event retention back until it is deleted");
        },
    )
}

/// The deliveries `rows` hold; one that does not decode (an event type a newer version
/// enqueued, before a downgrade or during a rolling upgrade) is passed over and logged once
/// per process, for it must not fail every listing of its webhook's deliveries.
fn readable_deliveries(rows: Vec<ListedDeliveryRow>) -> Vec<api::Delivery> {
    readable(
        rows,
        |row| row.id.clone(),
        |delivery_id, problem| {
            tracing::error!(%delivery_id, %problem, "a webhook delivery that does not decode is left out of its webhook's listing");
        },
    )
}

/// A page of a webhook's deliveries as [`super::webhooks::WebhookStore::deliveries`] answers
/// it: the first `page.limit` + 1 that decode, newest event first ([`decodable`]; `read` is
/// given how many rows of the page to read).
pub async fn decodable_deliveries<F>(
    page: &api::DeliveriesPage,
    read: impl FnMut(i64) -> F,
) -> Result<Vec<api::Delivery>, RepositoryError>
where
    F: Future<Output = Result<Vec<ListedDeliveryRow>, RepositoryError>>,
{
    // One more than asked says whether another page follows.
    let wanted = usize::try_from(page.limit.get()).map_or(usize::MAX, |n| n + 1);
    decodable(wanted, read, readable_deliveries).await
}

/// The overdue gates `rows` hold; one that does not decode (a value a newer version stored,
/// before a downgrade) is passed over and logged once per process, for it must not stop every
/// other gate's deadline.
fn readable_overdue(rows: Vec<WorkflowRow>) -> Vec<Workflow> {
    readable(
        rows,
        |row| row.feature_id.clone(),
        |feature_id, problem| {
            tracing::error!(%feature_id, %problem, "a workflow past its gate's deadline does not decode; its expiry is passed over");
        },
    )
}

/// The first `limit` overdue gates that decode, earliest due first ([`decodable`]; `read` is
/// given how many rows to read).
pub async fn decodable_overdue<F>(
    limit: u32,
    read: impl FnMut(i64) -> F,
) -> Result<Vec<Workflow>, RepositoryError>
where
    F: Future<Output = Result<Vec<WorkflowRow>, RepositoryError>>,
{
    decodable(limit as usize, read, readable_overdue).await
}

/// The first `limit` values that decode of the rows `read` gives (it is given how many rows to
/// read, from the first), `readable` keeping those that decode. Rows that never decode (logged
/// once) must not fill a page, or a reader would take a short page for the last, or never
/// reach the rows after them: when rows that do not decode kept a page from holding `limit`
/// values and more rows may follow, a page larger by as many is read instead — and at least
/// twice as large, so that thousands of such rows cost a few reads, not one per hundred.
async fn decodable<R, T, F>(
    limit: usize,
    mut read: impl FnMut(i64) -> F,
    readable: impl Fn(Vec<R>) -> Vec<T>,
) -> Result<Vec<T>, RepositoryError>
where
    F: Future<Output = Result<Vec<R>, RepositoryError>>,
{
    let mut asked = i64::try_from(limit).unwrap_or(i64::MAX);
    loop {
        let rows = read(asked).await?;
        let count = rows.len();
        let mut values = readable(rows);
        if values.len() >= limit || i64::try_from(count).unwrap_or(i64::MAX) < asked {
            values.truncate(limit);
            return Ok(values);
        }
        let past_them = i64::try_from(limit + (count - values.len())).unwrap_or(i64::MAX);
        asked = past_them.max(asked.saturating_mul(2));
    }
}

/// The values `rows` hold, each that does not decode passed over and told to `log` once per
/// process (by the id `id` gives its row).
fn readable<R, T: TryFrom<R, Error = CorruptRow> + 'static>(
    rows: Vec<R>,
    id: impl Fn(&R) -> String,
    log: impl Fn(&str, &CorruptRow),
) -> Vec<T> {
    static LOGGED: std::sync::Mutex<std::collections::BTreeSet<(std::any::TypeId, String)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    rows.into_iter()
        .filter_map(|row| {
            let id = id(&row);
            T::try_from(row)
                .inspect_err(|problem| {
                    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
                    if logged.insert((std::any::TypeId::of::<T>(), id.clone())) {
                        log(&id, problem);
                    }
                })
                .ok()
        })
        .collect()
}

/// The workflow a looked-up row holds, or not found.
pub fn workflow(
    feature_id: &FeatureId,
    row: Option<WorkflowRow>,
) -> Result<Workflow, RepositoryError> {
    row.ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))?
        .try_into()
        .map_err(corrupt)
}

/// A workflow's history; every stored workflow has at least its start, so no rows means no
/// workflow.
pub fn history(
    feature_id: &FeatureId,
    rows: Vec<TransitionRow>,
) -> Result<Vec<Transition>, RepositoryError> {
    if rows.is_empty() {
        return Err(RepositoryError::NotFound(feature_id.clone()));
    }
    convert(rows)
}

/// The type names a read of the log asks for: the filter's, or every type.
pub fn event_types(filter: &EventFilter) -> Vec<&'static str> {
    if filter.types.is_empty() {
        EventType::ALL.iter().map(|t| t.as_str()).collect()
    } else {
        filter.types.iter().map(|t| t.as_str()).collect()
    }
}

/// How many ids a read of some types only, of every workflow, looks at: its rows are found
/// through the primary key, and the types it passes over are read too, so an unbounded read
/// for a rare type would walk the whole log.
pub const SCAN_WINDOW: i64 = 10_000;

/// Whether a read of `filter` is bounded to [`SCAN_WINDOW`] ids: a read of some types only,
/// of every workflow (one of a workflow's events goes through its own indexes).
pub fn bounded(filter: &EventFilter) -> bool {
    filter.feature_id.is_none() && !filter.types.is_empty()
}

/// The ids a bounded read looks at: after its `after`, up to `through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The newest id in the window, read before the rows: ids become visible in order, so
    /// every id up to it is there for the rows' read (`after` when there is none).
    pub through: i64,
    /// The window held [`SCAN_WINDOW`] ids: more may follow it.
    pub full: bool,
}

impl Window {
    /// The last id a window from `first` may hold. It starts at the first id after the
    /// read's cursor, not at the cursor: a cursor below what retention kept (a read from the
    /// oldest event) would otherwise look at ids that are gone.
    pub fn last_from(first: i64) -> i64 {
        first.saturating_add(SCAN_WINDOW - 1)
    }

    /// The window after `after` from `first`, the first id after it (`None`: there is none),
    /// with `newest`, the newest id from there up to [`Window::last_from`] `first`.
    pub fn new(after: i64, first: Option<i64>, newest: Option<i64>) -> Self {
        let through = newest.unwrap_or(after);
        Window {
            through,
            full: first.is_some_and(|first| through == Window::last_from(first)),
        }
    }

    /// The last id of the window, for a store's query.
    pub fn end(window: Option<Window>) -> i64 {
        window.map_or(i64::MAX, |w| w.through)
    }
}

/// About the most bytes one page of the log holds: an event may carry a few hundred kilobytes
/// (a transition's metadata and reason, a hub's answer), so a page of a thousand could hold
/// hundreds of megabytes, in the store's answer and again in what is made of it. A page
/// stops after the rows that reach this, with more after them.
pub const PAGE_BYTES: usize = 4 << 20;

/// Rows a page asks the store for first; each later ask takes as many as the bytes left
/// would hold at the largest row seen so far, up to [`MOST_ASKED`].
const FIRST_ASK: i64 = 32;
/// Most rows one ask takes: the rows of an ask are in memory at once before they are
/// measured, so this bounds a read of events far larger than those before them; a thousand
/// small events take five asks (a page of them on PostgreSQL, debug build: 21 ms, against
/// 17 ms in one query and 26 ms in asks of 128).
const MOST_ASKED: i64 = 256;

/// A page of the log read in asks of a few rows, up to its limit or about [`PAGE_BYTES`],
/// whichever comes first: each back end loops `while let Some((after, rows)) = page.ask()`,
/// loading that many rows after that id, and hands them to [`SizedPage::take`].
pub struct SizedPage {
    after: i64,
    limit: i64,
    rows: Vec<EventWithEntry>,
    bytes: usize,
    largest: usize,
    /// The last ask came back short: nothing more in the read's range.
    exhausted: bool,
}

impl SizedPage {
    /// A page of up to `limit` rows after `after`.
    pub fn new(after: i64, limit: i64) -> Self {
        SizedPage {
            after,
            limit,
            rows: Vec::new(),
            bytes: 0,
            largest: 0,
            exhausted: false,
        }
    }

    /// The next ask: rows after which id, and how many; `None` when the page is done.
    pub fn ask(&self) -> Option<(i64, i64)> {
        let left = self.limit - i64::try_from(self.rows.len()).unwrap_or(i64::MAX);
        if self.exhausted || left <= 0 || self.bytes >= PAGE_BYTES {
            return None;
        }
        let rows = if self.rows.is_empty() {
            FIRST_ASK
        } else {
            let fit = (PAGE_BYTES - self.bytes) / self.largest.max(1);
            i64::try_from(fit).unwrap_or(i64::MAX).clamp(1, MOST_ASKED)
        };
        let after = self.rows.last().map_or(self.after, |row| row.0.id);
        Some((after, rows.min(left)))
    }

    /// Adds the rows an ask of `asked` rows found.
    pub fn take(&mut self, found: Vec<EventWithEntry>, asked: i64) {
        self.exhausted = i64::try_from(found.len()).unwrap_or(i64::MAX) < asked;
        for row in &found {
            let size = row_bytes(row);
            self.bytes += size;
            self.largest = self.largest.max(size);
        }
        self.rows.extend(found);
    }

    /// The rows, and the last one's id when the page stopped at its bytes with more after
    /// them.
    pub fn finish(self) -> (Vec<EventWithEntry>, Option<i64>) {
        let short = i64::try_from(self.rows.len()).unwrap_or(i64::MAX) < self.limit;
        let cut = (short && !self.exhausted && self.bytes >= PAGE_BYTES)
            .then(|| self.rows.last().map(|row| row.0.id))
            .flatten();
        (self.rows, cut)
    }
}

/// What an enqueue of up to `limit` events answers: how many of the `fetched` rows it read
/// past (`read`), or `limit` when its page was `cut` at its bytes with every row read past, so
/// that the caller, which reads on while a batch is full, reads the rest (fewer than `limit`
/// otherwise means it is up to date, or stopped at an event left to a newer replica).
pub fn enqueued(read: usize, fetched: usize, cut: bool, limit: i64) -> usize {
    if cut && read == fetched {
        usize::try_from(limit).unwrap_or(usize::MAX).max(read)
    } else {
        read
    }
}

/// About how many bytes a row of the log holds (its text; the fixed fields are small).
fn row_bytes((event, entry): &EventWithEntry) -> usize {
    let entry = entry.as_ref().map_or(0, |entry| {
        entry.metadata.len()
            + entry.reason.as_ref().map_or(0, String::len)
            + entry.actor.as_ref().map_or(0, String::len)
            + entry.on_behalf_of.as_ref().map_or(0, String::len)
    });
    64 + event.data.len() + event.subject.len() + entry
}

/// What one read of the log found: its rows, its bounds `(last_id, purged_through)` read
/// after them, and where a bounded read stopped with more after it.
pub struct EventRead {
    /// The rows, in id order.
    pub rows: Vec<EventWithEntry>,
    /// `(last_id, purged_through)`, read after the rows.
    pub bounds: (i64, i64),
    /// Where the read stopped short of its limit with more after it: the end of the window
    /// a bounded read looked at, when the window was full (more ids after it), or the last
    /// row of a page that reached [`PAGE_BYTES`].
    pub scanned_through: Option<i64>,
}

impl EventRead {
    /// The read of `page`, limited to `limit`, that looked at `window` (`None`: not bounded),
    /// then `bounds`.
    pub fn new(page: SizedPage, window: Option<Window>, limit: i64, bounds: (i64, i64)) -> Self {
        let (rows, cut) = page.finish();
        let short = i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit;
        // A page cut at its bytes has not read its window to the end.
        let scanned_through = cut.or(window
            .filter(|window| window.full && short)
            .map(|window| window.through));
        EventRead {
            rows,
            bounds,
            scanned_through,
        }
    }
}

/// A read of the log as the core sees it.
pub fn event_slice(read: EventRead) -> Result<EventSlice, RepositoryError> {
    let EventRead {
        rows,
        bounds,
        scanned_through,
    } = read;
    let mut events = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        let id = row.0.id;
        match readable_event(row) {
            Some(event) => events.push(event),
            None => unreadable.push(u64::try_from(id).unwrap_or(0)),
        }
    }
    Ok(EventSlice {
        events,
        unreadable,
        last_id: u64::try_from(bounds.0).unwrap_or(0),
        purged_through: u64::try_from(bounds.1).unwrap_or(0),
        scanned_through: scanned_through.and_then(|id| u64::try_from(id).ok()),
    })
}

/// Counts by state from `(state, count)` rows.
pub fn state_counts(rows: Vec<(String, i64)>) -> Result<StateCounts, RepositoryError> {
    let mut pairs = Vec::with_capacity(rows.len());
    for (state, count) in rows {
        let state: WorkflowState = state
            .parse()
            .map_err(|e| RepositoryError::Backend(Box::new(e)))?;
        pairs.push((state, u64::try_from(count).unwrap_or(0)));
    }
    Ok(StateCounts::from_pairs(pairs))
}

/// The write that imports `items`.
pub fn import(items: &[(Workflow, Transition)]) -> Write {
    let rows = items.iter().map(|(w, _)| WorkflowRow::from(w)).collect();
    let history = items
        .iter()
        .map(|(w, t)| TransitionRow::new(w.feature_id(), t))
        .collect();
    Write::Import(rows, history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_row_never_prints_its_answer() {
        let row = ReceiptRow {
            scope: "admin".into(),
            name: "k-1".into(),
            lease_until: 0,
            answer: r#"{"secret":"whsec_c2VjcmV0"}"#.into(),
        };
        let shown = format!("{row:?}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("<27 bytes>"), "{shown}");
    }

    /// A workflow just started, as its row.
    fn workflow_row(name: &str) -> WorkflowRow {
        use orchestrator_core::{Description, Metadata, TransitionContext, gate::GatePolicy};
        let (workflow, _) = Workflow::start_with(
            FeatureId::parse(name).unwrap(),
            Description::parse("x").unwrap(),
            Metadata::default(),
            GatePolicy::default(),
            TransitionContext::at(chrono::Utc::now()),
        );
        WorkflowRow::from(&workflow)
    }

    /// A webhook taking `types` (space-separated; empty: every type).
    fn webhook(types: &str) -> WebhookRow {
        WebhookRow {
            id: "wh_1".to_owned(),
            url: "http://127.0.0.1:9/".to_owned(),
            event_types: types.to_owned(),
            description: None,
            secret: "whsec_x".to_owned(),
            created_at: 0,
            enqueued_through: 0,
        }
    }

    #[test]
    fn an_event_of_an_unknown_type_is_left_a_while_to_a_replica_that_knows_it() {
        let rows = || {
            vec![
                row(1, "workflow.transitioned"),
                row(2, "workflow.archived"),
                row(3, "gate.overdue"),
            ]
        };
        let enqueued = |webhook: &WebhookRow, now: i64| {
            let (deliveries, through, passed) = webhook.deliveries(rows(), now).unwrap();
            let ids: Vec<i64> = deliveries.iter().map(|d| d.event_id).collect();
            (ids, through, passed)
        };
        let soon = 3_000_000 + 1_000_000;
        let later = 2_000_000 + UNKNOWN_TYPE_WAIT + 1;
        let ahead = 2_000_000 - UNKNOWN_TYPE_WAIT / 2;
        // Every type: the mark stops before it while a newer replica may enqueue it...
        // (one row read past: the enqueue does not ask again at once)...
        assert_eq!(enqueued(&webhook(""), soon), (vec![1], 1, 1));
        // ...also dated a little ahead of this clock (a newer replica's runs ahead)...
        assert_eq!(enqueued(&webhook(""), ahead), (vec![1], 1, 1));
        // ...and passes it over once none has.
        assert_eq!(enqueued(&webhook(""), later), (vec![1, 3], 3, 3));
        // A webhook that names the type (made through a newer replica) waits for it too; one
        // that does not goes on at once.
        let naming = webhook("gate.overdue workflow.archived");
        assert_eq!(enqueued(&naming, soon), (vec![], 1, 1));
        assert_eq!(enqueued(&webhook("gate.overdue"), soon), (vec![3], 3, 3));
    }

    #[tokio::test]
    async fn thousands_of_overdue_rows_that_do_not_decode_cost_a_few_reads() {
        let mut rows: Vec<WorkflowRow> = (0..3000)
            .map(|n| WorkflowRow {
                gate_policy: "not a policy".to_owned(),
                ..workflow_row(&format!("damaged-{n}"))
            })
            .collect();
        rows.extend((0..5).map(|n| workflow_row(&format!("sound-{n}"))));
        let reads = std::cell::Cell::new(0);
        let gates = decodable_overdue(100, |asked| {
            reads.set(reads.get() + 1);
            let page: Vec<WorkflowRow> = rows.iter().take(asked as usize).cloned().collect();
            async move { Ok(page) }
        })
        .await
        .unwrap();
        assert_eq!(gates.len(), 5);
        // 100, 200, 400 … 3 200 rows: not thirty reads of a hundred more each.
        assert_eq!(reads.get(), 6);
    }

    fn row(id: i64, event_type: &str) -> EventWithEntry {
        let row = EventRow {
            id,
            event_type: event_type.to_owned(),
            subject: "f-1".to_owned(),
            time: 1_000_000 * id,
            data: "{}".to_owned(),
            seq: None,
        };
        (row, None)
    }

    /// A page of `limit` that one ask of as many rows answered with `rows`.
    fn page_of(rows: Vec<EventWithEntry>, limit: i64) -> SizedPage {
        let mut page = SizedPage::new(0, limit);
        page.take(rows, limit);
        page
    }

    /// Reads a page of `limit` after 0 from a log of `sizes` (event `i + 1` holding
    /// `sizes[i]` bytes of data), as a back end does: the ids read, the asks made, and where
    /// the page was cut.
    fn read_sized(sizes: &[usize], limit: i64) -> (Vec<i64>, usize, Option<i64>) {
        let mut page = SizedPage::new(0, limit);
        let mut asks = 0;
        while let Some((after, rows)) = page.ask() {
            asks += 1;
            let found = (after + 1..)
                .take(usize::try_from(rows).unwrap())
                .filter_map(|id| {
                    let size = *sizes.get(usize::try_from(id - 1).ok()?)?;
                    let (mut event, entry) = row(id, "consultation.updated");
                    event.data = "x".repeat(size);
                    Some((event, entry))
                })
                .collect();
            page.take(found, rows);
        }
        let (rows, cut) = page.finish();
        (rows.iter().map(|r| r.0.id).collect(), asks, cut)
    }

    #[test]
    fn a_page_of_the_log_stops_at_its_bytes_with_more_after_it() {
        // A thousand small events: all of them.
        let (ids, asks, cut) = read_sized(&[500; 1500], 1000);
        assert_eq!((ids.len(), asks, cut), (1000, 5, None));
        assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
        // Large ones: the page stops once it holds about PAGE_BYTES, and says where.
        let big = 300 * 1024;
        let (ids, _, cut) = read_sized(&[big; 1000], 1000);
        let held = ids.len() * big;
        assert!(
            held >= PAGE_BYTES && held < PAGE_BYTES + 32 * big,
            "{}",
            ids.len()
        );
        assert_eq!(cut, ids.last().copied());
        assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
        // The log ends as the page fills: nothing more, so no cut.
        let (ids, _, cut) = read_sized(&[big; 20], 1000);
        assert_eq!((ids.len(), cut), (20, None));
        // Small first, then large: later asks shrink to what the bytes left would hold.
        let mut mixed = vec![100; 40];
        mixed.extend([big; 960]);
        let (ids, _, cut) = read_sized(&mixed, 1000);
        assert!(ids.len() < 1000 && cut.is_some());
        assert!((ids.len() - 40) * big < PAGE_BYTES + MOST_ASKED as usize * big);
    }

    #[test]
    fn a_bounded_read_says_where_it_stopped_only_when_more_may_follow() {
        let one = || vec![row(5, "gate.overdue")];
        // From the first id there is, not from the cursor: retention may have deleted far
        // past it.
        let full = Window::new(0, Some(15_001), Some(25_000));
        assert_eq!(
            full,
            Window {
                through: 25_000,
                full: true
            }
        );
        let stopped = |window, limit| {
            EventRead::new(page_of(one(), limit), window, limit, (0, 0)).scanned_through
        };
        // The window was full and the rows fewer than the limit: more may follow its end.
        assert_eq!(stopped(Some(full), 10), Some(25_000));
        // The limit was reached first: the page ends at its last row.
        assert_eq!(stopped(Some(full), 1), None);
        // The window held fewer ids: the log ends there, as an unbounded read would find.
        let short = Window::new(0, Some(1), Some(7));
        assert_eq!(
            short,
            Window {
                through: 7,
                full: false
            }
        );
        assert_eq!(stopped(Some(short), 10), None);
        assert_eq!(stopped(None, 10), None);
        // Nothing after the cursor.
        assert_eq!(
            Window::new(9, None, None),
            Window {
                through: 9,
                full: false
            }
        );
    }

    #[test]
    fn an_event_that_does_not_decode_is_passed_over_not_an_error() {
        let rows = || {
            vec![
                row(1, "consultation.created"),
                row(2, "workflow.renamed"),
                row(3, "consultation.updated"),
            ]
        };
        let slice = event_slice(EventRead::new(page_of(rows(), 10), None, 10, (3, 0)))
            .expect("the log reads on");
        let ids: Vec<u64> = slice.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!((slice.last_id, slice.unreadable), (3, vec![2]));

        let webhook = WebhookRow {
            id: "wh_1".to_owned(),
            url: "https://hooks.example.com/".to_owned(),
            event_types: String::new(),
            description: None,
            secret: "s".to_owned(),
            created_at: 0,
            enqueued_through: 0,
        };
        // Long after a newer replica could have enqueued the type this version does not know.
        let now = 3_000_000 + UNKNOWN_TYPE_WAIT;
        let (deliveries, through, _) = webhook.deliveries(rows(), now).expect("enqueued on");
        let ids: Vec<i64> = deliveries.iter().map(|d| d.event_id).collect();
        assert_eq!((ids, through), (vec![1, 3], 3));
    }
}
