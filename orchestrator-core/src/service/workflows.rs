//! Starting, reading, advancing and listing workflows.

use crate::repository::{Decision, ListQuery, Page, RepositoryError, Summary};
use crate::state::Trigger;
use crate::state::WorkflowState;
use crate::values::FeatureId;
use crate::workflow::{GateFacts, Transition, TransitionContext, TransitionError, Workflow};

use super::{Advance, Error, Orchestrator, Result, Seal, StartWorkflow, Started};

/// Tries of one decision whose judgement or commit lost to a change made meanwhile (another
/// decision, an ask stored, the gate's deadline): each is judged again on what it lost to.
/// Enough for the last of a gate's most approvers, all approving at once, to lose to each of
/// the others, and for the deadline's note and an ask besides.
const TRIES: usize = crate::gate::MAX_REQUIRED_APPROVALS as usize + 2;

impl Orchestrator {
    /// Creates a workflow and applies `start` (history entry 1 is IDLE → PHASE_1). An existing
    /// feature id is refused, or returned unchanged with `use_existing`.
    pub async fn start(&self, command: StartWorkflow) -> Result<Started> {
        self.start_sealed(command, None).await
    }

    /// [`Orchestrator::start`], with the answer `seal` makes from the new workflow stored in
    /// the transaction that creates it (for a request with an idempotency key).
    pub async fn start_sealed(
        &self,
        command: StartWorkflow,
        seal: Option<Seal<Workflow>>,
    ) -> Result<Started> {
        let command = command.checked()?;
        let policy = command.gate.over(self.gate_defaults)?;
        let (workflow, first) = Workflow::start_with(
            command.feature_id,
            command.description,
            command.metadata.clone(),
            policy,
            TransitionContext {
                actor: command.actor,
                actor_kind: command.actor_kind,
                metadata: command.metadata,
                ..TransitionContext::at(self.clock.now())
            },
        );
        let receipt = seal.map(|seal| seal(&workflow));
        match self
            .repository
            .create_with(&workflow, &first, receipt.as_ref())
            .await
        {
            Ok(()) => Ok(Started::Created(workflow)),
            Err(RepositoryError::AlreadyExists(id)) if command.use_existing => {
                Ok(Started::Existing(self.repository.get(&id).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The workflow of a feature.
    pub async fn get(&self, feature_id: &FeatureId) -> Result<Workflow> {
        Ok(self.repository.get(feature_id).await?)
    }

    /// Applies one trigger atomically: judged against the workflow as stored, committed only
    /// if nobody changed the workflow in between. Returns the workflow after it.
    pub async fn advance(&self, feature_id: &FeatureId, command: Advance) -> Result<Workflow> {
        self.advance_sealed(feature_id, command, None).await
    }

    /// [`Orchestrator::advance`], with the answer `seal` makes from the workflow after the
    /// transition stored in the transaction that commits it (for a request with an
    /// idempotency key).
    pub async fn advance_sealed(
        &self,
        feature_id: &FeatureId,
        command: Advance,
        seal: Option<Seal<Workflow>>,
    ) -> Result<Workflow> {
        let command = command.checked()?;
        // An approval at the gate needs facts only the hub has, asked for before the decision:
        // judged on a read and committed with a compare-and-set. Every other trigger is judged
        // by the store inside its write.
        if command.trigger == Trigger::HumanApproved && !command.override_gate {
            return self.advance_on_read(feature_id, command, seal).await;
        }
        // A decision the judge finds dated after an unnoted deadline is judged again once the
        // deadline is noted, at the time it was noted at; a few tries cover a workflow that
        // changes in between.
        let mut at = self.clock.now();
        let mut noted = None;
        let mut tries = 0;
        loop {
            tries += 1;
            let judge = {
                let command = command.clone();
                let seal = seal.clone();
                move |current: &Workflow| {
                    let mut decision = judged(current, &command, at, &GateFacts::default())?;
                    // As dated (never before the entry it follows: one judged first and
                    // committed while this one waited its turn).
                    let dated = decision.transition.at;
                    if let Some(due_at) = current
                        .gate_due_at()
                        .filter(|due| dated > *due && noted != Some(*due))
                    {
                        return Err(Error::DeadlineFirst {
                            feature_id: current.feature_id().clone(),
                            due_at,
                        });
                    }
                    decision.receipt = seal.as_ref().map(|seal| seal(&decision.next));
                    Ok(decision)
                }
            };
            match self.repository.advance(feature_id, Box::new(judge)).await {
                Err(Error::DeadlineFirst { .. }) if tries < TRIES => {
                    at = self.clock.now();
                    let current = self.repository.get(feature_id).await?;
                    if self.deadline_first(&current, at).await? {
                        noted = current.gate_due_at();
                    }
                }
                answer => return answer,
            }
        }
    }

    /// An approval (not overriding the gate): reads the workflow, asks the hub about pending
    /// escalations if it is at the gate, judges, and commits with a compare-and-set (with the
    /// sealed answer). A consultation stored between the facts and the commit refuses the
    /// commit; the approval is then judged again on fresh facts, which name it.
    async fn advance_on_read(
        &self,
        feature_id: &FeatureId,
        command: Advance,
        seal: Option<Seal<Workflow>>,
    ) -> Result<Workflow> {
        // A commit that lost is judged again on what it lost to: another decision (two
        // reviewers approving at once: the second is judged on the first's approval, or
        // refused if the caller named the version it saw), an ask stored meanwhile (the next
        // judgement names it), or the deadline's change.
        let mut tries = 0;
        loop {
            tries += 1;
            let lost = match self
                .approve_once(feature_id, &command, seal.as_ref())
                .await?
            {
                Ok(next) => return Ok(next),
                Err(lost) => lost,
            };
            if tries == TRIES {
                return Err(match lost {
                    RepositoryError::GateBlocked(_) => {
                        let facts = self.stored_gate_facts(feature_id).await?;
                        Error::GateBlocked {
                            escalations: facts.escalations,
                            asking: facts.asking,
                        }
                    }
                    lost => lost.into(),
                });
            }
        }
    }

    /// One try of [`Orchestrator::advance_on_read`]: the workflow after the approval, or
    /// `Ok(Err(lost))` when the store refused the commit because something landed after the
    /// read (another change: [`RepositoryError::VersionConflict`]; a consultation blocking
    /// the gate: [`RepositoryError::GateBlocked`]). The approval is dated when it is judged,
    /// after the hub answered: a try that lost is judged again on what it lost to, and its
    /// entry must not predate that.
    async fn approve_once(
        &self,
        feature_id: &FeatureId,
        command: &Advance,
        seal: Option<&Seal<Workflow>>,
    ) -> Result<std::result::Result<Workflow, RepositoryError>> {
        let current = self.repository.get(feature_id).await?;
        let at = self.clock.now();
        // An agent is refused by the gate's first rule, which needs no facts: judged before
        // the hub is asked, so a hub out of reach cannot turn that 403 into a 503.
        if let Err(refused @ Error::Transition(TransitionError::AgentMayNotDecide { .. })) =
            judged(&current, command, at, &GateFacts::default())
        {
            return Err(refused);
        }
        // Not at the gate, or at another version than expected: refused without the hub.
        let facts = if current.state() == WorkflowState::Gate1
            && command
                .expected_version
                .is_none_or(|v| v == current.version())
        {
            self.gate_facts(feature_id).await?
        } else {
            GateFacts::default()
        };
        let at = self.clock.now().max(at);
        let mut decision = judged(&current, command, at, &facts)?;
        // Past the gate's deadline, the approval comes after its note and its policy's change
        // (`reject`, `cancel`: the commit below then loses, and the next try is judged on the
        // workflow it left). The store notes nothing for a stay a decision made in time ended
        // since the read above.
        self.deadline_first(&current, decision.transition.at)
            .await?;
        decision.receipt = seal.map(|seal| seal(&decision.next));
        let committed = self
            .repository
            .commit_with(
                current.version(),
                &decision.next,
                &decision.transition,
                decision.receipt.as_ref(),
            )
            .await;
        match committed {
            Ok(()) => Ok(Ok(decision.next)),
            Err(
                lost @ (RepositoryError::GateBlocked(_) | RepositoryError::VersionConflict { .. }),
            ) => Ok(Err(lost)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `actor` (of `kind`) could approve `workflow`'s gate now, judged by the gate's
    /// rules on the stored consultations (the hub is not asked): `Ok` if an approval would be
    /// accepted, else the rule that would refuse it. For pages that show who may approve and
    /// why not; the approval itself is judged again, with fresh facts, when it is made.
    pub async fn may_approve(
        &self,
        workflow: &Workflow,
        actor: &crate::values::Actor,
        kind: crate::principal::ActorKind,
    ) -> Result<std::result::Result<(), crate::workflow::TransitionError>> {
        let facts = self.stored_gate_facts(workflow.feature_id()).await?;
        let ctx = TransitionContext {
            actor: Some(actor.clone()),
            actor_kind: Some(kind),
            ..TransitionContext::at(self.clock.now())
        };
        Ok(workflow
            .decide(Trigger::HumanApproved, ctx, &facts)
            .map(|_| ()))
    }

    /// One page of workflows ordered by feature id.
    pub async fn list(&self, query: &ListQuery) -> Result<Page> {
        let limit = query.limit.get();
        // One more than asked tells whether another page follows.
        let after = query.after.as_ref();
        let mut items = match (query.overdue, query.state) {
            (false, state) => self.repository.list(state, after, limit + 1).await?,
            // Only a stay at the gate can be overdue.
            (true, Some(state)) if state != WorkflowState::Gate1 => Vec::new(),
            (true, _) => {
                let now = self.clock.now();
                self.repository.list_overdue(now, after, limit + 1).await?
            }
        };
        let next_after = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|w| w.feature_id().clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// Up to `limit` workflows at the gate, the earliest due first (the overdue ones, then
    /// the next due; those without a deadline last, by feature id).
    pub async fn gates_by_due(&self, limit: u32) -> Result<Vec<Workflow>> {
        Ok(self.repository.gates_by_due(limit).await?)
    }

    /// How many workflows are in each state, and how many gates are overdue.
    pub async fn summary(&self) -> Result<Summary> {
        let counts = self.repository.summary().await?;
        let overdue = self.repository.count_overdue(self.clock.now()).await?;
        Ok(Summary { counts, overdue })
    }

    /// A workflow's transitions, oldest first.
    pub async fn history(&self, feature_id: &FeatureId) -> Result<Vec<Transition>> {
        Ok(self.repository.history(feature_id).await?)
    }
}

/// The rules applied to one advance: refused unless the workflow is at the command's expected
/// version (if it names one), then decided by the workflow's transition rules on `facts`.
fn judged(
    current: &Workflow,
    command: &Advance,
    at: crate::workflow::Timestamp,
    facts: &GateFacts,
) -> Result<Decision> {
    // An agent, or a non-admin's override, is refused before its version is: no version makes
    // its decision one to take.
    crate::workflow::may_decide(
        command.trigger,
        command.actor_kind,
        command.override_gate,
        command.roles.as_ref(),
    )?;
    if let Some(expected) = command.expected_version
        && expected != current.version()
    {
        return Err(Error::VersionConflict {
            expected,
            actual: current.version(),
        });
    }
    let ctx = TransitionContext {
        actor: command.actor.clone(),
        actor_kind: command.actor_kind,
        on_behalf_of: command.on_behalf_of.clone(),
        override_gate: command.override_gate,
        roles: command.roles.clone(),
        reason: command.reason.clone(),
        metadata: command.metadata.clone(),
        at,
    };
    let transition = current.decide(command.trigger, ctx, facts)?;
    Ok(Decision::of(current, transition))
}
