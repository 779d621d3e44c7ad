//! Consultations: asking the Agent Hub within the workflow's session, refreshing what a human
//! decided, and the gate's wait for humans.

use crate::consultation::{
    Consult, Consultation, ConsultationError, ConsultationId, ConsultationStatus,
};
use crate::hub::{AnswerStatus, HubAnswer, HubError, HubQuestion, HubSessionId, HumanResponse};
use crate::principal::ActorKind;
use crate::repository::RepositoryError;
use crate::values::FeatureId;
use crate::workflow::{GateFacts, Timestamp, Workflow};

use super::{Error, Orchestrator, Respond, Result, Seal};

/// Most escalations one call asks the hub about at once.
const LOOKUPS_AT_ONCE: usize = 8;

impl Orchestrator {
    /// What the gate rule needs to judge an approval: the workflow's `pending_human`
    /// consultations, refreshed from the hub first (a hub that cannot be reached fails the
    /// approval: the gate cannot be judged), and those still being asked (published: an ask
    /// still inside its wait is seen by no gate).
    pub(super) async fn gate_facts(&self, feature_id: &FeatureId) -> Result<GateFacts> {
        let mut blockers = self
            .repository
            .gate_blockers(std::slice::from_ref(feature_id))
            .await?;
        for refreshed in self.refresh_all(&mut blockers).await {
            refreshed?;
        }
        let mut facts = GateFacts::default();
        for consultation in blockers {
            note_blocker(&mut facts, consultation);
        }
        Ok(facts)
    }

    /// [`Orchestrator::gate_facts`] as stored, without asking the hub: for pages that say
    /// whether someone may approve, where a hub call per view would be too dear.
    pub(super) async fn stored_gate_facts(&self, feature_id: &FeatureId) -> Result<GateFacts> {
        let mut facts = GateFacts::default();
        for consultation in self
            .stored_blockers(std::slice::from_ref(feature_id))
            .await?
        {
            note_blocker(&mut facts, consultation);
        }
        Ok(facts)
    }

    /// Asks the hub about each pending consultation's escalation (a few at once, so a slow hub
    /// costs about one call's time, not one per escalation) and stores what changed, in order:
    /// the outcome of each. One whose look-up failed is left as stored. A hub out of reach
    /// ends it there (the look-ups still running are dropped, the rest not asked): its outcome
    /// is the last.
    async fn refresh_all(&self, consultations: &mut [Consultation]) -> Vec<Result<()>> {
        use futures_util::StreamExt as _;
        let ids: Vec<_> = consultations
            .iter()
            .map(|c| c.escalation_id.clone().filter(|_| c.is_pending()))
            .collect();
        let mut looked_up = futures_util::stream::iter(ids)
            .map(|id| async move {
                match id {
                    Some(id) => Some(self.hub.escalation(&id).await),
                    None => None,
                }
            })
            .buffered(LOOKUPS_AT_ONCE);
        let mut outcomes = Vec::with_capacity(consultations.len());
        for consultation in consultations.iter_mut() {
            let Some(looked_up) = looked_up.next().await else {
                break;
            };
            let unreachable = matches!(looked_up, Some(Err(HubError::Unavailable(_))));
            let lost = matches!(looked_up, Some(Err(HubError::EscalationNotFound(_))));
            let changed = match looked_up {
                None => Ok(false),
                Some(Ok(escalation)) => Ok(consultation.refresh(&escalation, self.clock.now())),
                // The hub forgot the escalation (it lost its database, say): ask again.
                // Nothing waits for a human any more, so it must not hold the gate or fail an
                // approval.
                Some(Err(HubError::EscalationNotFound(_))) => {
                    Ok(consultation.escalation_lost(self.clock.now()))
                }
                Some(Err(e)) => Err(Error::from(e)),
            };
            outcomes.push(match changed {
                Ok(true) => {
                    let stored = self.repository.update_consultation(consultation).await;
                    if lost && stored.is_ok() {
                        // Worth an operator's eye, once (when it is stored): a hub that lost
                        // its database, or another hub at AGENT_HUB_URL, lets the gates these
                        // held be approved.
                        tracing::warn!(
                            consultation_id = %consultation.id,
                            feature_id = %consultation.feature_id,
                            "the agent hub no longer knows this consultation's escalation; \
                             it needs rerouting and no longer holds the gate"
                        );
                    }
                    stored.map_err(Error::from)
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            });
            if unreachable {
                break;
            }
        }
        outcomes
    }

    /// Asks the Agent Hub's experts a question for a workflow in PHASE_1, GATE_1 or PHASE_2,
    /// within the workflow's hub session, waits for the answer and stores it. The workflow
    /// itself does not change; a failed ask stores nothing.
    ///
    /// This is the three steps below run back to back. A caller that must answer before a
    /// slow hub does (the HTTP server) runs them itself: [`Orchestrator::reserve_consultation`],
    /// then [`Orchestrator::ask_hub`], then [`Orchestrator::settle`] if the hub answered in time
    /// or [`Orchestrator::publish`] and later [`Orchestrator::finish`] if not.
    pub async fn consult(&self, feature_id: &FeatureId, consult: Consult) -> Result<Consultation> {
        let reserved = self.reserve_consultation(feature_id, consult).await?;
        let answer = self.ask_hub(&reserved).await;
        self.settle(reserved, answer).await
    }

    /// The workflow, if it exists and is active: a consultation may be stored for it (else
    /// `WorkflowNotFound` or `NotActive`). Judged again when one is stored.
    pub async fn consultable(&self, feature_id: &FeatureId) -> Result<Workflow> {
        let workflow = self.repository.get(feature_id).await?;
        if !workflow.state().is_active() {
            return Err(Error::NotActive {
                feature_id: feature_id.clone(),
                state: workflow.state(),
            });
        }
        Ok(workflow)
    }

    /// Step one: stores the question as an `asking` reservation, which no reader sees, if the
    /// workflow is active (else `NotActive`, before the hub is called).
    pub async fn reserve_consultation(
        &self,
        feature_id: &FeatureId,
        consult: Consult,
    ) -> Result<Consultation> {
        // A question built by hand is held to a request's rules too.
        let consult = Consult {
            context: crate::consultation::parse_context(consult.context)?,
            ..consult
        };
        let workflow = self.consultable(feature_id).await?;
        let reserved = Consultation::asking(
            ConsultationId::new(),
            feature_id.clone(),
            workflow.state(),
            consult,
            self.clock.now(),
        );
        self.repository.reserve_consultation(&reserved).await?;
        Ok(reserved)
    }

    /// Step two: puts an `asking` consultation's question to the hub, in the workflow's
    /// session (opened on the first question, renewed once if the hub lost it). Stores
    /// nothing but the session.
    pub async fn ask_hub(&self, asking: &Consultation) -> Result<HubAnswer> {
        let feature_id = &asking.feature_id;
        let (session, lost) = match self.repository.hub_session(feature_id).await? {
            Some(session) => (session, None),
            None => self.open_session(feature_id, None).await?,
        };
        let mut question = HubQuestion {
            topic: asking.topic.clone(),
            question: asking.question.as_str().to_owned(),
            feature_id: feature_id.clone(),
            context: asking.context.clone(),
            session_id: session,
        };
        let answer = match self.asked_closing(&question, lost).await {
            Err(HubError::SessionUnavailable(_) | HubError::SessionNotFound(_)) => {
                // The session expired or the hub forgot it: open a new one and ask once more.
                let (renewed, lost) = self
                    .open_session(feature_id, Some(&question.session_id))
                    .await?;
                question.session_id = renewed;
                self.asked_closing(&question, lost).await?
            }
            other => other?,
        };
        // An answer waiting for a human without the escalation to wait on could hold the
        // gate by nothing anyone can answer, or not at all: whatever hub sent it, it is not
        // an answer.
        if answer.status == AnswerStatus::PendingHuman && answer.escalation_id.is_none() {
            return Err(HubError::Failed(
                "the hub answered pending_human without an escalation id".to_owned(),
            )
            .into());
        }
        Ok(answer)
    }

    /// Step three, when the hub's answer came while the caller still waits: publishes the
    /// answered consultation (if the workflow is still active), or drops the reservation and
    /// returns the failure. Either way nothing but the answer is ever seen.
    pub async fn settle(
        &self,
        reserved: Consultation,
        answer: Result<HubAnswer>,
    ) -> Result<Consultation> {
        self.settle_sealed(reserved, answer, None).await
    }

    /// [`Orchestrator::settle`], with the answer `seal` makes from the published consultation
    /// stored in the transaction that publishes it (for a request with an idempotency key).
    pub async fn settle_sealed(
        &self,
        mut reserved: Consultation,
        answer: Result<HubAnswer>,
        seal: Option<Seal<Consultation>>,
    ) -> Result<Consultation> {
        match answer {
            Ok(answer) => {
                reserved.answer_with(answer, self.clock.now());
                self.publish_sealed(reserved, seal).await
            }
            Err(e) => {
                self.drop_reservation(&reserved).await;
                Err(e)
            }
        }
    }

    /// Step three, when the caller stops waiting: makes the reservation seen by everyone, as
    /// it stands (`asking`: it blocks the gate from now on), if the workflow is still active;
    /// otherwise the reservation is dropped and the refusal returned.
    pub async fn publish(&self, reserved: Consultation) -> Result<Consultation> {
        self.publish_sealed(reserved, None).await
    }

    /// [`Orchestrator::publish`], with the answer `seal` makes from the consultation stored in
    /// the transaction that publishes it (for a request with an idempotency key).
    pub async fn publish_sealed(
        &self,
        reserved: Consultation,
        seal: Option<Seal<Consultation>>,
    ) -> Result<Consultation> {
        let receipt = seal.map(|seal| seal(&reserved));
        match self
            .repository
            .add_consultation_with(&reserved, receipt.as_ref())
            .await
        {
            Ok(()) => Ok(reserved),
            Err(e) => {
                self.drop_reservation(&reserved).await;
                Err(e.into())
            }
        }
    }

    /// Step four, after [`Orchestrator::publish`]: stores how the ask ended — the hub's
    /// answer, or `failed` with the reason in the orchestrator's words.
    pub async fn finish(
        &self,
        asking: Consultation,
        answer: Result<HubAnswer>,
    ) -> Result<Consultation> {
        self.store_ending(self.ending(asking, answer)).await
    }

    /// How a published ask ended, as [`Orchestrator::finish`] stores it: the hub's answer, or
    /// `failed` with the reason in the orchestrator's words. Nothing is stored.
    pub fn ending(&self, mut asking: Consultation, answer: Result<HubAnswer>) -> Consultation {
        let now = self.clock.now();
        match answer {
            Ok(answer) => asking.answer_with(answer, now),
            Err(Error::Hub(e)) => asking.fail(ConsultationError::from_hub(&e), now),
            Err(_) => asking.fail(
                ConsultationError {
                    code: ConsultationError::INTERNAL.to_owned(),
                    message: "the orchestrator could not keep the hub session".to_owned(),
                },
                now,
            ),
        }
        asking
    }

    /// Stores an ask's [`Orchestrator::ending`] and returns what is stored: the ending, or
    /// what another server stored first. Storing it again after a failure is safe: an ask no
    /// longer `asking` is not written again (a try whose answer was lost may have stored it,
    /// and a second write would repeat its event). An answer that finds its workflow no
    /// longer active (cancelled, or finished) is not kept: the ask fails with the code
    /// `workflow_not_active`.
    pub async fn store_ending(&self, asking: Consultation) -> Result<Consultation> {
        if let Some(stored) = self.stored(&asking).await?
            && stored.status != ConsultationStatus::Asking
        {
            return Ok(settled_as_stored(&asking, stored));
        }
        match self.repository.update_consultation(&asking).await {
            Err(RepositoryError::NotActive { state, .. }) => {
                // A cancel (or the work's end) landed while the hub was asked, and wins: the
                // ask as stored (no answer) fails. An escalation the hub opened is left to it.
                if let Some(mut stored) = self.stored(&asking).await?
                    && stored.status == ConsultationStatus::Asking
                {
                    tracing::info!(
                        feature_id = %asking.feature_id,
                        consultation_id = %asking.id,
                        escalation_id = asking.escalation_id.as_ref().map(|e| e.to_string()),
                        %state,
                        "the Agent Hub answered once the workflow was no longer active: the \
                         answer was not kept"
                    );
                    stored.fail(ConsultationError::not_active(state), self.clock.now());
                    self.repository.update_consultation(&stored).await?;
                    return Ok(stored);
                }
            }
            written => written?,
        }
        // A settled consultation is never changed again: if another server ended this ask
        // meanwhile (it took it for one a crash left, its hub timeout being shorter than
        // this one's), the answer was not stored. Say so, and return what is stored.
        Ok(match self.stored(&asking).await? {
            Some(stored) => settled_as_stored(&asking, stored),
            None => asking,
        })
    }

    /// `consultation` as stored now, if it is.
    async fn stored(&self, consultation: &Consultation) -> Result<Option<Consultation>> {
        Ok(self
            .repository
            .consultations(&consultation.feature_id)
            .await?
            .into_iter()
            .find(|c| c.id == consultation.id))
    }

    /// Step four when the server stops before the hub answered: the consultation becomes
    /// `failed` with the code `interrupted`.
    pub async fn interrupt(&self, mut asking: Consultation) -> Result<Consultation> {
        asking.fail(ConsultationError::interrupted(), self.clock.now());
        self.repository.update_consultation(&asking).await?;
        Ok(asking)
    }

    /// Ends asks that no running server will finish: reservations made before `asked_before`
    /// are dropped and published `asking` consultations become `failed` with the code
    /// `interrupted`. Returns how many failed.
    pub async fn interrupt_asks(&self, asked_before: Timestamp) -> Result<u64> {
        let now = self.clock.now();
        Ok(self
            .repository
            .interrupt_asks(asked_before, &ConsultationError::interrupted(), now)
            .await?)
    }

    /// Removes a reservation; if storage fails, the next start-up drops it.
    async fn drop_reservation(&self, reserved: &Consultation) {
        if let Err(e) = self
            .repository
            .drop_reservation(&reserved.feature_id, reserved.id)
            .await
        {
            tracing::warn!(error = %e, consultation = %reserved.id, "a reservation was not dropped");
        }
    }

    /// Asks `question`, closing `lost` (a session made and not stored) meanwhile: the answer
    /// never waits for the close, which is given up if the answer comes first (an idle session
    /// expires at the hub by itself).
    async fn asked_closing(
        &self,
        question: &HubQuestion,
        lost: Option<HubSessionId>,
    ) -> std::result::Result<HubAnswer, HubError> {
        let ask = std::pin::pin!(self.hub.ask(question));
        let Some(lost) = lost else {
            return ask.await;
        };
        let close = std::pin::pin!(async move {
            let _ = self.hub.close_session(&lost).await;
        });
        match futures_util::future::select(ask, close).await {
            futures_util::future::Either::Left((answer, _)) => answer,
            futures_util::future::Either::Right(((), ask)) => ask.await,
        }
    }

    /// Opens a hub session and stores it in place of `replacing`; if another request stored
    /// one first, that one is used, so a workflow keeps one session however many first
    /// questions race. Answers the session to use and the one made in vain, if any, for the
    /// caller to close beside its question (nobody else will use it).
    async fn open_session(
        &self,
        feature_id: &FeatureId,
        replacing: Option<&HubSessionId>,
    ) -> Result<(HubSessionId, Option<HubSessionId>)> {
        let new = self.hub.create_session(feature_id).await?;
        let stored = match self
            .repository
            .swap_hub_session(feature_id, replacing, &new)
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                // Not stored, so nobody will use it either.
                let _ = self.hub.close_session(&new).await;
                return Err(e.into());
            }
        };
        // Lost the race: nobody will use the new one.
        let lost = (stored != new).then_some(new);
        Ok((stored, lost))
    }

    /// Answers a consultation's escalation as a human reviewer: forwards the answer to the hub
    /// (the actor as the responder), then folds the escalation as it now stands into the
    /// consultation and returns it. A consultation that waits for no human is refused; one
    /// the hub says was answered already is refreshed and refused with `AlreadyResolved`.
    pub async fn respond(
        &self,
        feature_id: &FeatureId,
        id: ConsultationId,
        respond: Respond,
    ) -> Result<Consultation> {
        self.respond_sealed(feature_id, id, respond, None).await
    }

    /// [`Orchestrator::respond`], with the answer `seal` makes from the refreshed
    /// consultation stored in the transaction that stores it (for a request with an
    /// idempotency key).
    pub async fn respond_sealed(
        &self,
        feature_id: &FeatureId,
        id: ConsultationId,
        respond: Respond,
        seal: Option<Seal<Consultation>>,
    ) -> Result<Consultation> {
        let respond = respond.checked()?;
        if respond.actor_kind == Some(ActorKind::Agent) {
            return Err(Error::AgentMayNotRespond);
        }
        // Not-found is the workflow's first.
        self.repository.get(feature_id).await?;
        let mut consultation = self
            .repository
            .consultations(feature_id)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::ConsultationNotFound {
                feature_id: feature_id.clone(),
                id,
            })?;
        let escalation_id = match (&consultation.escalation_id, consultation.is_pending()) {
            (Some(escalation), true) => escalation.clone(),
            _ => {
                return Err(Error::NotPending {
                    id,
                    status: consultation.status,
                });
            }
        };
        // Only a named responder's answer can be told for theirs when sent again.
        let named = respond.actor.is_some();
        let answer = HumanResponse {
            action: respond.action,
            responder: respond
                .actor
                .map_or_else(|| "unknown reviewer".to_owned(), |a| a.to_string()),
            response: respond.response,
        };
        let now = self.clock.now();
        let outcome = match self.hub.respond(&escalation_id, &answer).await {
            Ok(escalation) => Ok(consultation.refresh(&escalation, now)),
            Err(HubError::AlreadyResolved(_)) => {
                let escalation = match self.hub.escalation(&escalation_id).await {
                    Ok(escalation) => escalation,
                    // Lost between the two calls (the hub redeployed without its database):
                    // as when the answer itself finds it gone.
                    Err(HubError::EscalationNotFound(_)) => {
                        return Err(self.escalation_lost(&mut consultation, now).await);
                    }
                    Err(e) => return Err(e.into()),
                };
                consultation.refresh(&escalation, now);
                // The same answer by the same responder is this one, sent again after its
                // reply was lost (the hub took it, the answer never came back, or storing it
                // here failed): carried out once, so answered as the first time would have been.
                let ours = named
                    && escalation.human_action == Some(answer.action)
                    && escalation.human_responder.as_deref() == Some(answer.responder.as_str())
                    && escalation.human_response == answer.response;
                if ours {
                    Ok(true)
                } else {
                    self.repository.update_consultation(&consultation).await?;
                    return Err(Error::AlreadyResolved { id });
                }
            }
            Err(HubError::EscalationNotFound(_)) => {
                return Err(self.escalation_lost(&mut consultation, now).await);
            }
            Err(e) => Err(e),
        };
        if outcome? {
            let receipt = seal.map(|seal| seal(&consultation));
            self.repository
                .update_consultation_with(&consultation, receipt.as_ref())
                .await?;
        }
        Ok(consultation)
    }

    /// An escalation the hub no longer knows, found while answering it: the consultation,
    /// stored as needing a reroute, is no longer one to answer.
    async fn escalation_lost(&self, consultation: &mut Consultation, now: Timestamp) -> Error {
        consultation.escalation_lost(now);
        match self.repository.update_consultation(consultation).await {
            Ok(()) => Error::NotPending {
                id: consultation.id,
                status: consultation.status,
            },
            Err(e) => e.into(),
        }
    }

    /// The consultations that hold these workflows' gates (`pending_human` or `asking`, once
    /// published: an ask still inside its wait holds none), oldest first, as stored: no hub
    /// call, one read.
    pub async fn stored_blockers(&self, feature_ids: &[FeatureId]) -> Result<Vec<Consultation>> {
        Ok(self.repository.gate_blockers(feature_ids).await?)
    }

    /// A workflow's consultations, oldest first. Pending ones are refreshed from the hub
    /// first; if the hub cannot be reached they are returned as stored.
    pub async fn consultations(&self, feature_id: &FeatureId) -> Result<Vec<Consultation>> {
        let mut consultations = self.consultations_as_stored(feature_id).await?;
        self.refresh_consultations(&mut consultations).await?;
        Ok(consultations)
    }

    /// [`Orchestrator::consultations`] as stored, without asking the hub (`WorkflowNotFound`
    /// for an unknown workflow): with [`Orchestrator::refresh_consultations`], for a caller
    /// that bounds how long it waits for the hub.
    pub async fn consultations_as_stored(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>> {
        // Not-found is the workflow's, not the consultations'.
        self.repository.get(feature_id).await?;
        Ok(self.repository.consultations(feature_id).await?)
    }

    /// Refreshes `consultations` (as stored) from the hub, each one it could ask about, and
    /// stores what changed; one it could not ask about stays as stored (logged). A caller that
    /// gives up on it midway keeps the list it had: what was stored by then is stored whole.
    pub async fn refresh_consultations(&self, consultations: &mut [Consultation]) -> Result<()> {
        let outcomes = self.refresh_all(consultations).await;
        for (consultation, outcome) in consultations.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {}
                // The stored state is still true: this one is listed as stored (a hub out of
                // reach, after which none is asked, or an answer about this escalation that
                // could not be read), the others as refreshed.
                Err(Error::Hub(e)) => {
                    tracing::warn!(consultation_id = %consultation.id, error = %e,
                        "an escalation could not be refreshed; listed as stored");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }
}

/// What is stored of an ask that ended as `ended`: `stored`, with a warning when it ended
/// otherwise (another server ended it first, and this ending was not stored).
fn settled_as_stored(ended: &Consultation, stored: Consultation) -> Consultation {
    if (&stored.status, &stored.error) != (&ended.status, &ended.error) {
        tracing::warn!(
            consultation = %ended.id,
            answered = ended.status.as_str(),
            stored = stored.status.as_str(),
            "an ask's outcome came after the ask was ended elsewhere; it is not stored"
        );
    }
    stored
}

/// Adds what `consultation` holds the gate by: its escalation if it waits for a human, itself
/// if the hub has not answered yet.
fn note_blocker(facts: &mut GateFacts, consultation: Consultation) {
    if consultation.is_pending() {
        facts.escalations.extend(consultation.escalation_id);
    } else if consultation.status == ConsultationStatus::Asking {
        facts.asking.push(consultation.id);
    }
}
