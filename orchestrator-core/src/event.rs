//! The event log's records: one event per accepted change, built here from the change so every
//! store writes the same event in the transaction that makes the change.
//!
//! Stores number the events with a sequence that only grows, in the order their transactions
//! commit, so a reader that has seen event N never later meets a new one below N.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::consultation::Consultation;
use crate::repository::OverdueNote;
use crate::values::{FeatureId, ValidationError};
use crate::workflow::{Timestamp, Transition, Workflow};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// A history entry was written (start, advance, approval, rejection, cancel…).
    #[serde(rename = "workflow.transitioned")]
    WorkflowTransitioned,
    /// A stay at the gate passed its deadline.
    #[serde(rename = "gate.overdue")]
    GateOverdue,
    /// A consultation was stored where readers see it.
    #[serde(rename = "consultation.created")]
    ConsultationCreated,
    /// A consultation's status or answer changed.
    #[serde(rename = "consultation.updated")]
    ConsultationUpdated,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 4] = [
        EventType::WorkflowTransitioned,
        EventType::GateOverdue,
        EventType::ConsultationCreated,
        EventType::ConsultationUpdated,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::WorkflowTransitioned => "workflow.transitioned",
            EventType::GateOverdue => "gate.overdue",
            EventType::ConsultationCreated => "consultation.created",
            EventType::ConsultationUpdated => "consultation.updated",
        }
    }

    /// The type with this wire name.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The type with this wire name, or a validation error on `field` listing the types.
    pub fn parse_field(field: &'static str, name: &str) -> Result<EventType, ValidationError> {
        EventType::parse(name).ok_or_else(|| {
            ValidationError::new(
                field,
                format!(
                    "unknown event type '{}'; must be one of {}",
                    crate::values::shown(name),
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            )
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before the store numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// The workflow it happened to.
    pub subject: FeatureId,
    /// When the change was made.
    pub time: Timestamp,
    /// The change as JSON text (see [`EventType`]), encoded once when the change is made.
    pub data: String,
}

/// `workflow.transitioned`'s data: the history entry with the workflow's id, version and
/// state after it, serialised straight to text.
#[derive(Serialize)]
struct Transitioned<'a> {
    feature_id: &'a FeatureId,
    version: u64,
    state: crate::state::WorkflowState,
    #[serde(flatten)]
    entry: &'a Transition,
}

/// `gate.overdue`'s data.
#[derive(Serialize)]
struct Overdue<'a> {
    feature_id: &'a FeatureId,
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    due_at: Timestamp,
    approvals: &'a [crate::gate::Approval],
    on_expiry: crate::gate::OnExpiry,
}

/// JSON text of `value`; these values always serialise.
fn text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

impl NewEvent {
    /// `workflow.transitioned`: the history entry, with the workflow's id, version and state
    /// after it.
    pub fn transitioned(workflow: &Workflow, transition: &Transition) -> Self {
        NewEvent {
            event_type: EventType::WorkflowTransitioned,
            subject: workflow.feature_id().clone(),
            time: transition.at,
            data: Self::transitioned_data(workflow.feature_id(), transition),
        }
    }

    /// `workflow.transitioned`'s data from the history entry alone: a workflow's version is
    /// the number of its history entries, so after entry `seq` it is `seq`, in state `to`.
    /// Stores that keep the entry already may keep only a reference to it and rebuild the
    /// data with this when the event is read.
    pub fn transitioned_data(feature_id: &FeatureId, transition: &Transition) -> String {
        text(&Transitioned {
            feature_id,
            version: transition.seq,
            state: transition.to,
            entry: transition,
        })
    }

    /// `consultation.created` or `consultation.updated`: the consultation as readers see it.
    pub fn consultation(event_type: EventType, consultation: &Consultation) -> Self {
        NewEvent {
            event_type,
            subject: consultation.feature_id.clone(),
            time: consultation.updated_at,
            data: text(consultation),
        }
    }

    /// `gate.overdue`: the stay's deadline and the approvals it had.
    pub fn gate_overdue(note: &OverdueNote) -> Self {
        NewEvent {
            event_type: EventType::GateOverdue,
            subject: note.feature_id.clone(),
            time: note.noted_at,
            data: text(&Overdue {
                feature_id: &note.feature_id,
                due_at: note.due_at,
                approvals: &note.approvals,
                on_expiry: note.on_expiry,
            }),
        }
    }

    /// The data as a JSON value (`Null` if the text is not JSON, which a store never keeps).
    pub fn data_value(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// An event as the log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its place in the log: 1, 2, 3… in commit order.
    pub id: u64,
    /// What happened.
    pub event: NewEvent,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this workflow's.
    pub feature_id: Option<FeatureId>,
    /// Only these types (all when empty).
    pub types: Vec<EventType>,
}

impl EventFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &NewEvent) -> bool {
        self.admits(event.event_type, &event.subject)
    }

    /// Whether an event of `event_type` about `subject` passes.
    pub fn admits(&self, event_type: EventType, subject: &FeatureId) -> bool {
        self.feature_id.as_ref().is_none_or(|id| id == subject)
            && (self.types.is_empty() || self.types.contains(&event_type))
    }

    /// Whether every event passes (no feature, no types named).
    pub fn admits_all(&self) -> bool {
        self.feature_id.is_none() && self.types.is_empty()
    }
}

/// What a read of the log found: the events after the reader's id, and the log's bounds as
/// read *after* the events, so a purge that raced the read shows in `purged_through`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventSlice {
    /// The events, in id order.
    pub events: Vec<Event>,
    /// Every event up to this id has been deleted by retention (0: none).
    pub purged_through: u64,
    /// The newest event's id (0: none yet).
    pub last_id: u64,
    /// The ids of rows the read found but could not decode (a type a newer version wrote, a
    /// damaged row), in id order: passed over, and counted toward the read's limit.
    pub unreadable: Vec<u64>,
    /// Set when the read found fewer than its limit and stopped at this id with more after
    /// it: a store may bound a read that passes over most rows (of some types only, of every
    /// workflow) to a range of ids, so that one read never walks the whole log, and a read of
    /// large events to a few megabytes. Resume after it.
    pub scanned_through: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_admits_all_only_when_it_names_nothing() {
        assert!(EventFilter::default().admits_all());
        let feature = EventFilter {
            feature_id: Some(FeatureId::parse("f").unwrap()),
            ..EventFilter::default()
        };
        assert!(!feature.admits_all());
        let types = EventFilter {
            types: vec![EventType::GateOverdue],
            ..EventFilter::default()
        };
        assert!(!types.admits_all());
    }
}
