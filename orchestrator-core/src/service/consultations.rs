//! Consultations: asking the Agent Hub within the workflow's session, refreshing what a human
//! decided, and the gate's wait for humans.

use crate::consultation::{Consult, Consultation, ConsultationId};
use crate::hub::{HubError, HubQuestion, HubSessionId, HumanResponse};
use crate::values::FeatureId;

use super::{Error, Orchestrator, Respond, Result};

impl Orchestrator {
    /// from the hub first, and any still pending refuse the approval.
    pub(super) async fn guard_gate(&self, feature_id: &FeatureId) -> Result<()> {
        let pending: Vec<Consultation> = self
            .repository
            .consultations(feature_id)
            .await?
            .into_iter()
            .filter(Consultation::is_pending)
            .collect();
        let mut blocking = Vec::new();
        for mut consultation in pending {
            self.refresh(&mut consultation).await?;
            if consultation.is_pending() {
                blocking.extend(consultation.escalation_id);
            }
        }
        if blocking.is_empty() {
            Ok(())
        } else {
            Err(Error::GateBlocked {
                escalations: blocking,
            })
        }
    }

    /// Asks the hub about a pending consultation's escalation and stores what changed.
    async fn refresh(&self, consultation: &mut Consultation) -> Result<()> {
        let Some(id) = consultation.escalation_id.clone() else {
            return Ok(());
        };
        let changed = match self.hub.escalation(&id).await {
            Ok(escalation) => consultation.refresh(&escalation, self.clock.now()),
            // The hub forgot the escalation (it lost its database, say): ask again. Nothing
            // waits for a human any more, so it must not hold the gate or fail an approval.
            Err(HubError::EscalationNotFound(_)) => consultation.escalation_lost(self.clock.now()),
            Err(e) => return Err(e.into()),
        };
        if changed {
            self.repository.update_consultation(consultation).await?;
        }
        Ok(())
    }

    /// Asks the Agent Hub's experts a question for a workflow in PHASE_1, GATE_1 or PHASE_2,
    /// within the workflow's hub session, and stores the answer. The workflow itself does not
    /// change; a failed ask stores nothing.
    pub async fn consult(&self, feature_id: &FeatureId, consult: Consult) -> Result<Consultation> {
        let workflow = self.repository.get(feature_id).await?;
        if !workflow.state().is_active() {
            return Err(Error::NotActive {
                feature_id: feature_id.clone(),
                state: workflow.state(),
            });
        }
        let session = match self.repository.hub_session(feature_id).await? {
            Some(session) => session,
            None => self.open_session(feature_id, None).await?,
        };
        let mut question = HubQuestion {
            topic: consult.topic.clone(),
            question: consult.question.as_str().to_owned(),
            feature_id: feature_id.clone(),
            context: consult.context.clone(),
            session_id: session,
        };
        let answer = match self.hub.ask(&question).await {
            Err(HubError::SessionUnavailable(_) | HubError::SessionNotFound(_)) => {
                // The session expired or the hub forgot it: open a new one and ask once more.
                question.session_id = self
                    .open_session(feature_id, Some(&question.session_id))
                    .await?;
                self.hub.ask(&question).await?
            }
            other => other?,
        };
        let consultation = Consultation::answered(
            ConsultationId::new(),
            feature_id.clone(),
            workflow.state(),
            consult,
            answer,
            self.clock.now(),
        );
        self.repository.add_consultation(&consultation).await?;
        Ok(consultation)
    }

    /// Opens a hub session and stores it in place of `replacing`; if another request stored
    /// one first, that one is used and the new one closed, so a workflow keeps one session
    /// however many first questions race.
    async fn open_session(
        &self,
        feature_id: &FeatureId,
        replacing: Option<&HubSessionId>,
    ) -> Result<HubSessionId> {
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
        if stored != new {
            // Lost the race: nobody will use this one. Failing to close it costs only an idle
            // session on the hub, which expires by itself.
            let _ = self.hub.close_session(&new).await;
        }
        Ok(stored)
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
                let escalation = self.hub.escalation(&escalation_id).await?;
                consultation.refresh(&escalation, now);
                self.repository.update_consultation(&consultation).await?;
                return Err(Error::AlreadyResolved { id });
            }
            Err(HubError::EscalationNotFound(_)) => {
                consultation.escalation_lost(now);
                self.repository.update_consultation(&consultation).await?;
                return Err(Error::NotPending {
                    id,
                    status: consultation.status,
                });
            }
            Err(e) => Err(e),
        };
        if outcome? {
            self.repository.update_consultation(&consultation).await?;
        }
        Ok(consultation)
    }

    /// A workflow's consultations, oldest first. Pending ones are refreshed from the hub
    /// first; if the hub cannot be reached they are returned as stored.
    pub async fn consultations(&self, feature_id: &FeatureId) -> Result<Vec<Consultation>> {
        // Not-found is the workflow's, not the consultations'.
        self.repository.get(feature_id).await?;
        let mut consultations = self.repository.consultations(feature_id).await?;
        for consultation in consultations.iter_mut().filter(|c| c.is_pending()) {
            match self.refresh(consultation).await {
                Ok(()) => {}
                // The stored state is still true: answer with it, and stop asking a hub that
                // fails rather than wait for its timeout once per consultation.
                Err(Error::Hub(_)) => break,
                Err(other) => return Err(other),
            }
        }
        Ok(consultations)
    }
}
