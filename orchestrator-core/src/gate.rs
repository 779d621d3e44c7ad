//! The gate: a workflow's policy for GATE_1 (how many people must approve, whether the author
//! may be one of them, by when, and what happens past that), fixed at start, and the current
//! stay at the gate (since when, who made the work, who approved so far).
//! [`crate::Workflow::decide`] judges by them; `record` keeps the stay.

use serde::{Deserialize, Serialize};

use crate::values::{Actor, ValidationError};
use crate::workflow::Timestamp;

/// Most approvals a gate may require.
pub const MAX_REQUIRED_APPROVALS: u8 = 10;

/// Longest deadline a gate may have: a year, in seconds.
pub const MAX_DUE_SECONDS: u32 = 31_536_000;

/// What happens when a gate's deadline passes (the gate is marked overdue in every case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// Only marked overdue; people still decide.
    #[default]
    Flag,
    /// Sent back to PHASE_1 (`human_rejected` by `system`, reason `gate expired`).
    Reject,
    /// Cancelled (`cancel` by `system`, reason `gate expired`).
    Cancel,
}

impl OnExpiry {
    /// Every choice, in documentation order.
    pub const ALL: [OnExpiry; 3] = [OnExpiry::Flag, OnExpiry::Reject, OnExpiry::Cancel];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExpiry::Flag => "flag",
            OnExpiry::Reject => "reject",
            OnExpiry::Cancel => "cancel",
        }
    }

    /// The trigger the system applies when the deadline passes, if any.
    pub fn trigger(self) -> Option<crate::state::Trigger> {
        match self {
            OnExpiry::Flag => None,
            OnExpiry::Reject => Some(crate::state::Trigger::HumanRejected),
            OnExpiry::Cancel => Some(crate::state::Trigger::Cancel),
        }
    }
}

impl std::str::FromStr for OnExpiry {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, ValidationError> {
        OnExpiry::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new("gate.on_expiry", "must be one of flag, reject, cancel")
            })
    }
}

/// The reason recorded when the system acts on an expired gate.
pub const EXPIRY_REASON: &str = "gate expired";

/// How a workflow's gate is passed; fixed when the workflow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatePolicy {
    /// Distinct people who must approve (1–10); the last one's approval moves the feature to
    /// PHASE_2, the others are recorded as GATE_1 → GATE_1 entries.
    pub required_approvals: u8,
    /// Whether whoever completed the work may approve it.
    pub allow_self_approval: bool,
    /// Seconds a stay at the gate may last (1–31 536 000) before it is overdue; `None`: no
    /// deadline.
    #[serde(default)]
    pub due_in_seconds: Option<u32>,
    /// What happens past the deadline.
    #[serde(default)]
    pub on_expiry: OnExpiry,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            required_approvals: 1,
            allow_self_approval: false,
            due_in_seconds: None,
            on_expiry: OnExpiry::Flag,
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
            ..GatePolicy::default()
        })
    }

    /// The same policy with a deadline of `due_in_seconds` (1–31 536 000; `None`: none) and
    /// `on_expiry`, or which rule it breaks.
    pub fn with_deadline(
        self,
        due_in_seconds: Option<u32>,
        on_expiry: OnExpiry,
    ) -> Result<Self, ValidationError> {
        if due_in_seconds.is_some_and(|s| !(1..=MAX_DUE_SECONDS).contains(&s)) {
            return Err(ValidationError::new(
                "gate.due_in_seconds",
                format!("must be 1-{MAX_DUE_SECONDS}"),
            ));
        }
        Ok(GatePolicy {
            due_in_seconds,
            on_expiry,
            ..self
        })
    }

    /// When a stay at the gate that began at `entered_at` is due, if the policy has a deadline.
    pub fn due_at(&self, entered_at: Timestamp) -> Option<Timestamp> {
        self.due_in_seconds
            .map(|s| entered_at + chrono::Duration::seconds(i64::from(s)))
    }
}

/// A gate policy as a caller asked for it at start: each part not named takes the
/// orchestrator's default. Built by parsing a request; [`GateChoice::over`] completes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateChoice {
    /// Approvals needed.
    pub required_approvals: Option<u8>,
    /// Whether the author may approve.
    pub allow_self_approval: Option<bool>,
    /// The deadline in seconds.
    pub due_in_seconds: Option<u32>,
    /// What happens past the deadline.
    pub on_expiry: Option<OnExpiry>,
}

impl GateChoice {
    /// How this choice asks less than `defaults`, if it does: fewer approvals, or the author
    /// allowed to approve where the defaults do not allow it. The server's defaults are the
    /// team's policy; only an admin starts a workflow below it. (A deadline, or none, changes
    /// when a stay is overdue, not who must approve: it is anyone's choice.)
    pub fn weakening(&self, defaults: GatePolicy) -> Option<String> {
        let mut weaker = Vec::new();
        if let Some(asked) = self.required_approvals
            && asked < defaults.required_approvals
        {
            weaker.push(format!(
                "gate.required_approvals {asked} is fewer than this server's {}",
                defaults.required_approvals
            ));
        }
        if self.allow_self_approval == Some(true) && !defaults.allow_self_approval {
            weaker.push("gate.allow_self_approval lets the author approve".to_owned());
        }
        (!weaker.is_empty()).then(|| weaker.join("; "))
    }

    /// The policy: this choice over `defaults`, or which rule the mix breaks.
    pub fn over(self, defaults: GatePolicy) -> Result<GatePolicy, ValidationError> {
        GatePolicy::new(
            self.required_approvals
                .unwrap_or(defaults.required_approvals),
            self.allow_self_approval
                .unwrap_or(defaults.allow_self_approval),
        )?
        .with_deadline(
            self.due_in_seconds.or(defaults.due_in_seconds),
            self.on_expiry.unwrap_or(defaults.on_expiry),
        )
    }
}

/// One person's approval in the current stay at the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// Who approved.
    pub actor: Actor,
    /// Whom the approver acted for (the history entry's `on_behalf_of`), if anyone: that
    /// person's approval is given too, so neither may approve again in this stay. Absent when
    /// nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<Actor>,
    /// When.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub at: Timestamp,
}

impl Approval {
    /// Whose approval this is: the approver, and whom they acted for.
    pub fn people(&self) -> impl Iterator<Item = &Actor> {
        std::iter::once(&self.actor).chain(self.on_behalf_of.iter())
    }
}

/// The current stay at GATE_1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStay {
    /// When the workflow entered the gate.
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub entered_at: Timestamp,
    /// Who made the work: the `actor` and `on_behalf_of` of the entry that entered the gate.
    #[serde(default)]
    pub authors: Vec<Actor>,
    /// The approvals so far, oldest first; distinct actors.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_weakens_the_defaults_only_by_asking_fewer_approvals_or_self_approval() {
        let defaults = GatePolicy::new(2, false).unwrap();
        let choice = |required_approvals, allow_self_approval| GateChoice {
            required_approvals,
            allow_self_approval,
            ..GateChoice::default()
        };
        let fewer = choice(Some(1), None).weakening(defaults).unwrap();
        assert!(
            fewer.contains("required_approvals 1") && fewer.contains("2"),
            "{fewer}"
        );
        let own = choice(None, Some(true)).weakening(defaults).unwrap();
        assert!(own.contains("allow_self_approval"), "{own}");
        assert!(
            choice(Some(1), Some(true))
                .weakening(defaults)
                .unwrap()
                .contains("; ")
        );
        // As many or more, the defaults, or no self-approval: nothing weaker.
        for same in [
            choice(None, None),
            choice(Some(2), Some(false)),
            choice(Some(3), None),
        ] {
            assert_eq!(same.weakening(defaults), None, "{same:?}");
        }
        // A deadline is anyone's choice.
        let hurried = GateChoice {
            due_in_seconds: Some(60),
            on_expiry: Some(OnExpiry::Reject),
            ..GateChoice::default()
        };
        assert_eq!(hurried.weakening(defaults), None);
        // Self-approval the defaults allow already weakens nothing.
        let lenient = GatePolicy::new(1, true).unwrap();
        assert_eq!(choice(Some(1), Some(true)).weakening(lenient), None);
    }
}
