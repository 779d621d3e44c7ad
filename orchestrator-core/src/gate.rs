//! The gate: a workflow's policy for GATE_1 (how many people must approve, whether the author
//! may be one of them), fixed at start, and the current stay at the gate (since when, who made
//! the work, who approved so far). [`crate::Workflow::decide`] judges by them; `record` keeps
//! the stay.

use serde::{Deserialize, Serialize};

use crate::values::{Actor, ValidationError};
use crate::workflow::Timestamp;

/// Most approvals a gate may require.
pub const MAX_REQUIRED_APPROVALS: u8 = 10;

/// How a workflow's gate is passed; fixed when the workflow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatePolicy {
    /// Distinct people who must approve (1–10); the last one's approval moves the feature to
    /// PHASE_2, the others are recorded as GATE_1 → GATE_1 entries.
    pub required_approvals: u8,
    /// Whether whoever completed the work may approve it.
    pub allow_self_approval: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            required_approvals: 1,
            allow_self_approval: false,
        }
    }
}

impl GatePolicy {
    /// A policy of `required_approvals` (1–10), or which rule it breaks.
    pub fn new(required_approvals: u8, allow_self_approval: bool) -> Result<Self, ValidationError> {
        if !(1..=MAX_REQUIRED_APPROVALS).contains(&required_approvals) {
            return Err(ValidationError::new(
                "gate.required_approvals",
                format!("must be 1-{MAX_REQUIRED_APPROVALS}"),
            ));
        }
        Ok(GatePolicy {
            required_approvals,
            allow_self_approval,
        })
    }
}

/// One person's approval in the current stay at the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// Who approved.
    pub actor: Actor,
    /// When.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// The current stay at GATE_1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStay {
    /// When the workflow entered the gate.
    pub entered_at: Timestamp,
    /// Who made the work: the `actor` and `on_behalf_of` of the entry that entered the gate.
    #[serde(default)]
    pub authors: Vec<Actor>,
    /// The approvals so far, oldest first; distinct actors.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}
