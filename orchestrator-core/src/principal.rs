//! Who acts: a principal's kind (human or agent) and roles, and what each role may do.
//!
//! Pure rules. The server authenticates a request and finds its [`Principal`]; these types say
//! whether that principal may do what it asks ([`Principal::may`]). The one rule about kinds
//! that no role can lift — an agent never approves or rejects — is judged by
//! [`crate::Workflow::decide`], where every transition is judged.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::state::Trigger;
use crate::values::{Actor, ValidationError};

/// What kind of actor moved a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person.
    Human,
    /// An AI agent (or any program acting on its own).
    Agent,
    /// The orchestrator itself (a gate's deadline, say).
    System,
}

impl ActorKind {
    /// The wire name: `human`, `agent`, `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Human => "human",
            ActorKind::Agent => "agent",
            ActorKind::System => "system",
        }
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActorKind {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(ActorKind::Human),
            "agent" => Ok(ActorKind::Agent),
            "system" => Ok(ActorKind::System),
            _ => Err(ValidationError::new(
                "actor_kind",
                "must be one of human, agent, system",
            )),
        }
    }
}

/// What a principal may do. Every role may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read; start workflows; `start`, `agent_complete`, `cancel`; ask the Agent Hub.
    Agent,
    /// Read; `human_approved`, `human_rejected`; answer escalations.
    Reviewer,
    /// Everything.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role lets its holder do `action`.
    pub fn permits(self, action: Action) -> bool {
        match (self, action) {
            (Role::Admin, _) | (_, Action::Read) => true,
            (Role::Agent, Action::StartWorkflow | Action::Consult) => true,
            (Role::Agent, Action::Trigger(t)) => {
                matches!(t, Trigger::Start | Trigger::AgentComplete | Trigger::Cancel)
            }
            (Role::Reviewer, Action::Respond) => true,
            (_, Action::OverrideGate | Action::ManageWebhooks | Action::WeakenGate) => false,
            (Role::Reviewer, Action::Trigger(t)) => {
                matches!(t, Trigger::HumanApproved | Trigger::HumanRejected)
            }
            _ => false,
        }
    }

    /// The least role that permits `action`: the one a refusal names.
    pub fn needed_for(action: Action) -> Role {
        [Role::Viewer, Role::Agent, Role::Reviewer]
            .into_iter()
            .find(|role| role.permits(action))
            .unwrap_or(Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "agent" => Ok(Role::Agent),
            "reviewer" => Ok(Role::Reviewer),
            "admin" => Ok(Role::Admin),
            _ => Err(ValidationError::new(
                "roles",
                "each must be one of viewer, agent, reviewer, admin",
            )),
        }
    }
}

/// Something a caller asks to do, as far as roles are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any GET.
    Read,
    /// `POST /workflow/start`.
    StartWorkflow,
    /// Advance a workflow by this trigger.
    Trigger(Trigger),
    /// Ask the Agent Hub.
    Consult,
    /// Answer an escalation.
    Respond,
    /// Pass a gate whatever is missing (`human_approved` with `override`).
    OverrideGate,
    /// Create, read, delete webhooks and redeliver (they name where events go).
    ManageWebhooks,
    /// Start a workflow whose gate asks less than the server's default: fewer approvals, or
    /// its author allowed to approve (see [`GateChoice::weakening`](crate::gate::GateChoice::weakening)).
    WeakenGate,
}

/// Somebody the server knows by a token: a name (the `actor` of what they do), a kind, roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Their name, recorded as the actor of what they do.
    pub name: Actor,
    /// Human or agent.
    pub kind: ActorKind,
    /// What they may do; never empty.
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// Whether they may do `action`; if not, the role it needs.
    pub fn may(&self, action: Action) -> Result<(), Role> {
        if self.roles.iter().any(|role| role.permits(action)) {
            Ok(())
        } else {
            Err(Role::needed_for(action))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role]) -> Principal {
        Principal {
            name: Actor::parse("alice").unwrap(),
            kind: ActorKind::Human,
            roles: roles.iter().copied().collect(),
        }
    }

    #[test]
    fn every_role_reads_and_each_does_its_own_work() {
        for role in [Role::Viewer, Role::Agent, Role::Reviewer, Role::Admin] {
            assert!(role.permits(Action::Read));
        }
        let agent = principal(&[Role::Agent]);
        assert!(agent.may(Action::StartWorkflow).is_ok());
        // A gate below the server's default is an admin's to start.
        assert_eq!(agent.may(Action::WeakenGate), Err(Role::Admin));
        assert!(principal(&[Role::Admin]).may(Action::WeakenGate).is_ok());
        assert!(agent.may(Action::Trigger(Trigger::AgentComplete)).is_ok());
        assert!(agent.may(Action::Trigger(Trigger::Cancel)).is_ok());
        assert!(agent.may(Action::Consult).is_ok());
        assert_eq!(
            agent.may(Action::Trigger(Trigger::HumanApproved)),
            Err(Role::Reviewer)
        );
        assert_eq!(agent.may(Action::Respond), Err(Role::Reviewer));

        let reviewer = principal(&[Role::Reviewer]);
        assert!(
            reviewer
                .may(Action::Trigger(Trigger::HumanApproved))
                .is_ok()
        );
        assert!(
            reviewer
                .may(Action::Trigger(Trigger::HumanRejected))
                .is_ok()
        );
        assert!(reviewer.may(Action::Respond).is_ok());
        assert_eq!(reviewer.may(Action::StartWorkflow), Err(Role::Agent));
        assert_eq!(
            reviewer.may(Action::Trigger(Trigger::Cancel)),
            Err(Role::Agent)
        );

        let viewer = principal(&[Role::Viewer]);
        assert!(viewer.may(Action::Read).is_ok());
        assert_eq!(viewer.may(Action::Consult), Err(Role::Agent));

        let admin = principal(&[Role::Admin]);
        for action in [
            Action::StartWorkflow,
            Action::Consult,
            Action::Respond,
            Action::Trigger(Trigger::HumanApproved),
            Action::Trigger(Trigger::Cancel),
            Action::ManageWebhooks,
        ] {
            assert!(admin.may(action).is_ok(), "{action:?}");
        }
        for role in [Role::Viewer, Role::Agent, Role::Reviewer] {
            assert_eq!(
                principal(&[role]).may(Action::ManageWebhooks),
                Err(Role::Admin)
            );
        }
        // Roles add up.
        assert!(
            principal(&[Role::Agent, Role::Reviewer])
                .may(Action::Trigger(Trigger::HumanApproved))
                .is_ok()
        );
    }

    #[test]
    fn kinds_and_roles_read_their_wire_names_only() {
        assert_eq!("agent".parse::<ActorKind>().unwrap(), ActorKind::Agent);
        assert_eq!(
            "Agent".parse::<ActorKind>().unwrap_err().field,
            "actor_kind"
        );
        assert_eq!("reviewer".parse::<Role>().unwrap(), Role::Reviewer);
        assert!("root".parse::<Role>().is_err());
    }
}
