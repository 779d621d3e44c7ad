//! The life-cycle states, the triggers, and the transition table.
//!
//! The table is data ([`TRANSITIONS`]); every rule about which trigger moves which state
//! is read from it, so there is exactly one place to change the life cycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a feature stands in its delivery life cycle.
///
/// Serialised exactly as the API spells it: `IDLE`, `PHASE_1`, `GATE_1`, `PHASE_2`, `DONE`.
/// The declaration order is the life-cycle order, which `Ord` and the summary follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WorkflowState {
    /// No active workflow: never started or cancelled; `start` begins it (again).
    #[serde(rename = "IDLE")]
    Idle,
    /// Specification and planning.
    #[serde(rename = "PHASE_1")]
    Phase1,
    /// Human review gate before implementation.
    #[serde(rename = "GATE_1")]
    Gate1,
    /// Implementation.
    #[serde(rename = "PHASE_2")]
    Phase2,
    /// Completed; terminal.
    #[serde(rename = "DONE")]
    Done,
}

impl WorkflowState {
    /// Every state, in life-cycle order.
    pub const ALL: [WorkflowState; 5] = [
        WorkflowState::Idle,
        WorkflowState::Phase1,
        WorkflowState::Gate1,
        WorkflowState::Phase2,
        WorkflowState::Done,
    ];

    /// The wire name of the state (`PHASE_1`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Idle => "IDLE",
            WorkflowState::Phase1 => "PHASE_1",
            WorkflowState::Gate1 => "GATE_1",
            WorkflowState::Phase2 => "PHASE_2",
            WorkflowState::Done => "DONE",
        }
    }

    /// The triggers this state accepts, in table order.
    pub fn allowed_triggers(self) -> Vec<Trigger> {
        TRANSITIONS
            .iter()
            .filter(|(from, _, _)| *from == self)
            .map(|(_, trigger, _)| *trigger)
            .collect()
    }

    /// Progress through the life cycle, in percent: IDLE 0, PHASE_1 25, GATE_1 50, PHASE_2 75, DONE 100.
    pub const fn percent(self) -> u8 {
        match self {
            WorkflowState::Idle => 0,
            WorkflowState::Phase1 => 25,
            WorkflowState::Gate1 => 50,
            WorkflowState::Phase2 => 75,
            WorkflowState::Done => 100,
        }
    }

    /// Whether consultations may be asked in this state (PHASE_1, GATE_1 and PHASE_2).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            WorkflowState::Phase1 | WorkflowState::Gate1 | WorkflowState::Phase2
        )
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state '{0}' (expected one of IDLE, PHASE_1, GATE_1, PHASE_2, DONE)")]
pub struct UnknownState(pub String);

impl FromStr for WorkflowState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkflowState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(crate::values::shown(s)))
    }
}

/// What moves a workflow from one state to the next. Serialised in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// IDLE → PHASE_1.
    Start,
    /// PHASE_1 → GATE_1, PHASE_2 → DONE.
    AgentComplete,
    /// GATE_1 → PHASE_2.
    HumanApproved,
    /// GATE_1 → PHASE_1 (rework).
    HumanRejected,
    /// PHASE_1, GATE_1, PHASE_2 → IDLE.
    Cancel,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 5] = [
        Trigger::Start,
        Trigger::AgentComplete,
        Trigger::HumanApproved,
        Trigger::HumanRejected,
        Trigger::Cancel,
    ];

    /// Whether only a person may give it: `human_approved` and `human_rejected`.
    pub const fn is_human_decision(self) -> bool {
        matches!(self, Trigger::HumanApproved | Trigger::HumanRejected)
    }

    /// The wire name of the trigger (`agent_complete`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::AgentComplete => "agent_complete",
            Trigger::HumanApproved => "human_approved",
            Trigger::HumanRejected => "human_rejected",
            Trigger::Cancel => "cancel",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trigger name that is not in the transition table at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown trigger '{0}' (expected one of start, agent_complete, human_approved, human_rejected, cancel)"
)]
pub struct UnknownTrigger(pub String);

impl FromStr for Trigger {
    type Err = UnknownTrigger;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| UnknownTrigger(crate::values::shown(s)))
    }
}

/// The whole transition table: `(from, trigger, to)`. Anything not listed is refused.
pub const TRANSITIONS: [(WorkflowState, Trigger, WorkflowState); 8] = {
    use Trigger::*;
    use WorkflowState::*;
    [
        (Idle, Start, Phase1),
        (Phase1, AgentComplete, Gate1),
        (Gate1, HumanApproved, Phase2),
        (Gate1, HumanRejected, Phase1),
        (Phase2, AgentComplete, Done),
        (Phase1, Cancel, Idle),
        (Gate1, Cancel, Idle),
        (Phase2, Cancel, Idle),
    ]
};

/// The state `trigger` leads to from `from`, or `None` when the table does not allow it.
pub fn next_state(from: WorkflowState, trigger: Trigger) -> Option<WorkflowState> {
    TRANSITIONS
        .iter()
        .find(|(f, t, _)| *f == from && *t == trigger)
        .map(|(_, _, to)| *to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_triggers_round_trip_through_their_wire_names() {
        for state in WorkflowState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(state.as_str().parse::<WorkflowState>(), Ok(state));
        }
        for trigger in Trigger::ALL {
            let json = serde_json::to_string(&trigger).unwrap();
            assert_eq!(json, format!("\"{}\"", trigger.as_str()));
            assert_eq!(trigger.as_str().parse::<Trigger>(), Ok(trigger));
        }
    }

    #[test]
    fn a_trigger_outside_the_table_is_unknown() {
        assert!("approve".parse::<Trigger>().is_err());
        assert!("Start".parse::<Trigger>().is_err());
        assert!("phase_1".parse::<WorkflowState>().is_err());
    }

    #[test]
    fn done_accepts_nothing_and_idle_accepts_only_start() {
        assert!(WorkflowState::Done.allowed_triggers().is_empty());
        assert_eq!(WorkflowState::Idle.allowed_triggers(), vec![Trigger::Start]);
    }

    #[test]
    fn phase_2_is_entered_only_by_human_approved_from_gate_1() {
        let into_phase_2: Vec<_> = TRANSITIONS
            .iter()
            .filter(|(_, _, to)| *to == WorkflowState::Phase2)
            .collect();
        assert_eq!(
            into_phase_2,
            vec![&(
                WorkflowState::Gate1,
                Trigger::HumanApproved,
                WorkflowState::Phase2
            )]
        );
    }

    #[test]
    fn every_active_state_can_be_cancelled() {
        for state in [
            WorkflowState::Phase1,
            WorkflowState::Gate1,
            WorkflowState::Phase2,
        ] {
            assert_eq!(
                next_state(state, Trigger::Cancel),
                Some(WorkflowState::Idle)
            );
        }
    }

    #[test]
    fn progress_percent_follows_the_life_cycle() {
        let percents: Vec<u8> = WorkflowState::ALL.iter().map(|s| s.percent()).collect();
        assert_eq!(percents, vec![0, 25, 50, 75, 100]);
    }
}
