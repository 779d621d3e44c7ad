//! Deadlines at the gate: the sweep that notes each stay past its deadline once and, when the
//! policy says so, sends the work back or cancels it as the system.

use crate::gate::{EXPIRY_REASON, OnExpiry};
use crate::principal::ActorKind;
use crate::repository::{Expiry, OverdueNote, RepositoryError};
use crate::values::{Actor, FeatureId, Reason};
use crate::workflow::{GateFacts, Timestamp, TransitionContext, Workflow};

use super::{Error, Orchestrator, Result};

/// Most overdue gates one round of a sweep reads.
const SWEEP_LIMIT: u32 = 100;
/// Most rounds one sweep runs while each reads a full [`SWEEP_LIMIT`]: a thousand gates due
/// in the same second (a bulk start with one deadline) are noted by one sweep, not by ten a
/// second apart; past that, the next sweep goes on.
const SWEEP_ROUNDS: usize = 10;
/// Failures in a row after which a sweep gives up until the next: one gate that cannot be
/// written (its row locked, say) must not hold up the gates due after it, but a store that
/// fails every write should not be asked a hundred times a second.
const SWEEP_FAILURES: usize = 3;
/// How long after a stay's deadline a sweep notes it: a decision dated just before the
/// deadline and still on its way to the store (queued for a batch, waiting for the row) is
/// not sent back by an expiry committed ahead of it. Sweeps run every second, so a stay is
/// still noted within a few seconds of its deadline.
pub const SWEEP_GRACE: chrono::Duration = chrono::Duration::seconds(1);

/// A stay at the gate this sweep found past its deadline and noted (no other server had).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The workflow.
    pub feature_id: FeatureId,
    /// When its stay at the gate was due.
    pub due_at: Timestamp,
    /// What its policy does past the deadline; for `reject` and `cancel` the change was
    /// committed together with the note.
    pub on_expiry: OnExpiry,
    /// The workflow after the sweep.
    pub workflow: Workflow,
}

impl Orchestrator {
    /// Notes every stay at the gate past its deadline that no server has noted yet, and
    /// applies its policy's `on_expiry` (`human_rejected` or `cancel` by actor `system`, kind
    /// `system`, reason `gate expired`) in the same transaction. Safe to run on every replica
    /// at once: the store keeps one note per stay, and the change is a compare-and-set, so a
    /// person's decision that lands first wins and the stay is left alone (a decision dated
    /// after the deadline notes it itself first, before it is judged).
    ///
    /// Stays are noted a second (`SWEEP_GRACE`) after their deadline. A gate that cannot be
    /// noted is logged and left for later: the sweep goes on with the gates due after it, and the next
    /// sweeps try it once more after all the others (those tried longest ago first), so that
    /// gates whose rows a stuck transaction holds never keep the rest from their deadlines.
    /// After a few failures in a row a sweep stops. It fails only when the overdue gates
    /// cannot be read, or when every gate it tried failed.
    pub async fn sweep_gates(&self) -> Result<Vec<Expired>> {
        let now = self.clock.now();
        // The gates earlier sweeps failed on, the one to try first first.
        let held_before = std::mem::take(&mut *self.sweep_failed());
        let mut failed: Vec<FeatureId> = Vec::new();
        // Those among them still due, as read: tried after the rounds.
        let mut again: Vec<Workflow> = Vec::new();
        let mut expired = Vec::new();
        let (mut in_a_row, mut last_failure) = (0, None);
        let mut read_failure = None;
        'rounds: for _ in 0..SWEEP_ROUNDS {
            // Rows this sweep passes over (failed, or left for the end) must not fill a page.
            let passed_over = failed.len() + again.len();
            let asked = SWEEP_LIMIT.saturating_add(u32::try_from(passed_over).unwrap_or(u32::MAX));
            let due = match self
                .repository
                .unnoted_overdue(now - SWEEP_GRACE, asked)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    read_failure = Some(e);
                    break;
                }
            };
            let full = due.len() >= asked as usize;
            for workflow in due {
                let feature_id = workflow.feature_id();
                if failed.contains(feature_id) || again.iter().any(|w| w.feature_id() == feature_id)
                {
                    continue;
                }
                if held_before.contains(feature_id) {
                    again.push(workflow);
                    continue;
                }
                if !self
                    .try_to_note(workflow, now, &mut expired, &mut failed, &mut last_failure)
                    .await
                {
                    in_a_row += 1;
                    if in_a_row == SWEEP_FAILURES {
                        break 'rounds;
                    }
                } else {
                    in_a_row = 0;
                }
            }
            if !full {
                break;
            }
        }
        // The gates earlier sweeps failed on, once each, longest failing first; those not
        // reached (a few failed in a row) go first next time.
        again.sort_by_key(|w| held_before.iter().position(|id| id == w.feature_id()));
        let mut untried = Vec::new();
        in_a_row = 0;
        for workflow in again {
            if in_a_row == SWEEP_FAILURES || read_failure.is_some() {
                untried.push(workflow.feature_id().clone());
                continue;
            }
            if self
                .try_to_note(workflow, now, &mut expired, &mut failed, &mut last_failure)
                .await
            {
                in_a_row = 0;
            } else {
                in_a_row += 1;
            }
        }
        // Not read this time (the read failed, or they were not due any more): kept only if
        // the read failed, to be tried again.
        if read_failure.is_some() {
            let unread: Vec<FeatureId> = held_before
                .into_iter()
                .filter(|id| !untried.contains(id) && !failed.contains(id))
                .collect();
            untried.extend(unread);
        }
        untried.extend(failed);
        *self.sweep_failed() = untried;
        match (read_failure, last_failure) {
            (Some(e), _) if expired.is_empty() => Err(e.into()),
            (Some(e), _) => {
                // What was noted stands; the next sweep reads on.
                tracing::warn!(error = %e, "the gates past their deadline could not be read further; the next sweep goes on");
                Ok(expired)
            }
            (None, Some(e)) if expired.is_empty() => Err(e),
            _ => Ok(expired),
        }
    }

    /// Notes one stay for a sweep: `true` unless it failed (logged, its id added to `failed`).
    async fn try_to_note(
        &self,
        workflow: Workflow,
        now: Timestamp,
        expired: &mut Vec<Expired>,
        failed: &mut Vec<FeatureId>,
        last_failure: &mut Option<Error>,
    ) -> bool {
        let feature_id = workflow.feature_id().clone();
        match self.expire(workflow, now).await {
            Ok(noted) => {
                if let Noted::Now(done) = noted {
                    expired.push(*done);
                }
                true
            }
            Err(e) => {
                tracing::warn!(feature_id = %feature_id, error = %e,
                    "a gate past its deadline could not be noted; a later sweep tries again");
                failed.push(feature_id);
                *last_failure = Some(e);
                false
            }
        }
    }

    /// The gates sweeps failed on, the one to try first first.
    fn sweep_failed(&self) -> std::sync::MutexGuard<'_, Vec<FeatureId>> {
        self.sweep_failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Handles the deadline of `workflow`'s stay at the gate before a person's decision dated
    /// `at`, if the stay was due before then: a decision after the deadline comes after the
    /// `gate.overdue` note and the policy's change (which may leave the decision nothing to
    /// decide: a gate that expired with `reject` is back in PHASE_1). Notes it unless that was
    /// done already (or the stay ended meanwhile, which the store checks). `false` when the
    /// workflow changed before the note and its change could be committed: nothing was
    /// written, and the decision is to be judged again on the workflow as it is now.
    pub(super) async fn deadline_first(&self, workflow: &Workflow, at: Timestamp) -> Result<bool> {
        if !workflow.is_overdue(at) {
            return Ok(true);
        }
        Ok(match self.expire(workflow.clone(), at).await? {
            Noted::Now(_) | Noted::Before => true,
            Noted::Moved => false,
        })
    }

    /// Notes one overdue stay (and applies its policy).
    async fn expire(&self, workflow: Workflow, now: Timestamp) -> Result<Noted> {
        let Some(due_at) = workflow.gate_due_at() else {
            return Ok(Noted::Moved);
        };
        let on_expiry = workflow.gate_policy().on_expiry;
        let note = OverdueNote {
            feature_id: workflow.feature_id().clone(),
            due_at,
            noted_at: now,
            on_expiry,
            approvals: workflow
                .gate_stay()
                .map(|stay| stay.approvals.clone())
                .unwrap_or_default(),
        };
        // A workflow with a `due_at` is at the gate, where both triggers are allowed.
        let change = match on_expiry.trigger() {
            Some(trigger) => {
                let transition =
                    workflow.decide(trigger, system_context(now), &GateFacts::default())?;
                let mut next = workflow.clone();
                next.record(&transition);
                Some((next, transition))
            }
            None => None,
        };
        let expiry = change.as_ref().map(|(next, transition)| Expiry {
            expected_version: workflow.version(),
            workflow: next,
            transition,
        });
        match self.repository.note_overdue(&note, expiry).await {
            Ok(true) => {
                let expired = Expired {
                    feature_id: note.feature_id,
                    due_at,
                    on_expiry,
                    workflow: change.map_or(workflow, |(next, _)| next),
                };
                if let Some(observer) = &self.expiries {
                    observer(&expired);
                }
                Ok(Noted::Now(Box::new(expired)))
            }
            Ok(false) => Ok(Noted::Before),
            Err(RepositoryError::VersionConflict { .. }) => Ok(Noted::Moved),
            Err(e) => Err(e.into()),
        }
    }
}

/// What noting one stay's deadline came to.
enum Noted {
    /// Noted now, with its policy's change.
    Now(Box<Expired>),
    /// Noted before (by a sweep or a decision, on any server), or not to be noted: the stay
    /// ended, by a decision made in time, before the note's write. Nothing was written.
    Before,
    /// The workflow changed before the note and the policy's change could be committed:
    /// nothing was written.
    Moved,
}

/// The context of the system's own transitions at an expired gate.
fn system_context(at: Timestamp) -> TransitionContext {
    TransitionContext {
        actor: Some(Actor::system()),
        actor_kind: Some(ActorKind::System),
        reason: Reason::parse(EXPIRY_REASON).ok(),
        ..TransitionContext::at(at)
    }
}
