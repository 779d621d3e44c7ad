//! `ScriptedAgentHub`: an `AgentHub` in memory whose answers a test scripts, for tests of the
//! orchestrator's consultation rules without HTTP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::hub::{
    AgentHub, AnswerStatus, Escalation, EscalationId, EscalationStatus, HubAnswer, HubError,
    HubHealth, HubQuestion, HubSessionId, HumanAction,
};
use crate::values::FeatureId;

#[derive(Debug, Default)]
struct Script {
    answers: VecDeque<Result<HubAnswer, HubError>>,
    escalations: HashMap<String, Result<Escalation, HubError>>,
    failing_look_ups: HashMap<String, HubError>,
    expired_sessions: HashSet<String>,
    sessions_created: u32,
    sessions_closed: Vec<HubSessionId>,
    asked_with: Vec<HubSessionId>,
    down: bool,
}

/// An Agent Hub whose answers are scripted. Without a script every question is answered
/// `resolved` with confidence 90.
#[derive(Debug, Default)]
pub struct ScriptedAgentHub {
    script: Mutex<Script>,
}

impl ScriptedAgentHub {
    /// A hub that answers every question confidently.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next ask gets this outcome.
    pub fn push_answer(&self, outcome: Result<HubAnswer, HubError>) {
        self.lock().answers.push_back(outcome);
    }

    /// The next ask is escalated to a human as escalation `id` (still pending).
    pub fn push_escalation(&self, id: &str) {
        let answer = HubAnswer {
            answer: "tentative answer".to_owned(),
            rationale: None,
            confidence: 40,
            uncertainty_reasons: vec!["scripted".to_owned()],
            status: AnswerStatus::PendingHuman,
            escalation_id: Some(EscalationId(id.to_owned())),
        };
        self.push_answer(Ok(answer));
        self.set_escalation(id, EscalationStatus::Pending, None, None);
    }

    /// What the hub says about escalation `id` from now on.
    pub fn set_escalation(
        &self,
        id: &str,
        status: EscalationStatus,
        human_action: Option<HumanAction>,
        human_response: Option<&str>,
    ) {
        let escalation = Escalation {
            id: EscalationId(id.to_owned()),
            status,
            tentative_answer: "tentative answer".to_owned(),
            human_action,
            human_response: human_response.map(str::to_owned),
            human_responder: human_action.map(|_| "scripted reviewer".to_owned()),
            resolved_at: None,
        };
        self.lock()
            .escalations
            .insert(id.to_owned(), Ok(escalation));
    }

    /// Every later look-up of escalation `id` fails with `error`.
    pub fn fail_escalation(&self, id: &str, error: HubError) {
        self.lock().escalations.insert(id.to_owned(), Err(error));
    }

    /// Every later look-up of escalation `id` fails with `error`, while an answer to it still
    /// reaches it (a hub that loses it between the two calls).
    pub fn fail_look_ups(&self, id: &str, error: HubError) {
        self.lock().failing_look_ups.insert(id.to_owned(), error);
    }

    /// Every later ask with this session is refused as expired.
    pub fn expire_session(&self, session: &HubSessionId) {
        self.lock().expired_sessions.insert(session.0.clone());
    }

    /// While down, every call fails as unreachable.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// How many sessions were opened.
    pub fn sessions_created(&self) -> u32 {
        self.lock().sessions_created
    }

    /// The sessions closed, in order.
    pub fn sessions_closed(&self) -> Vec<HubSessionId> {
        self.lock().sessions_closed.clone()
    }

    /// The session of every ask that reached the hub, in order.
    pub fn asked_with(&self) -> Vec<HubSessionId> {
        self.lock().asked_with.clone()
    }

    fn check_up(script: &Script) -> Result<(), HubError> {
        if script.down {
            Err(HubError::Unavailable("scripted hub is down".to_owned()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl AgentHub for ScriptedAgentHub {
    async fn create_session(&self, _feature_id: &FeatureId) -> Result<HubSessionId, HubError> {
        let mut script = self.lock();
        Self::check_up(&script)?;
        script.sessions_created += 1;
        Ok(HubSessionId(format!("session-{}", script.sessions_created)))
    }

    async fn close_session(&self, id: &HubSessionId) -> Result<(), HubError> {
        let mut script = self.lock();
        Self::check_up(&script)?;
        script.sessions_closed.push(id.clone());
        Ok(())
    }

    async fn ask(&self, question: &HubQuestion) -> Result<HubAnswer, HubError> {
        let mut script = self.lock();
        Self::check_up(&script)?;
        if script.expired_sessions.contains(&question.session_id.0) {
            return Err(HubError::SessionUnavailable(format!(
                "session {} expired",
                question.session_id
            )));
        }
        script.asked_with.push(question.session_id.clone());
        script.answers.pop_front().unwrap_or_else(|| {
            Ok(HubAnswer {
                answer: format!("scripted answer about {}", question.topic),
                rationale: Some("scripted".to_owned()),
                confidence: 90,
                uncertainty_reasons: Vec::new(),
                status: AnswerStatus::Resolved,
                escalation_id: None,
            })
        })
    }

    async fn escalation(&self, id: &EscalationId) -> Result<Escalation, HubError> {
        let script = self.lock();
        Self::check_up(&script)?;
        if let Some(error) = script.failing_look_ups.get(&id.0) {
            return Err(error.clone());
        }
        script
            .escalations
            .get(&id.0)
            .cloned()
            .unwrap_or_else(|| Err(HubError::EscalationNotFound(id.0.clone())))
    }

    async fn respond(
        &self,
        id: &EscalationId,
        response: &crate::hub::HumanResponse,
    ) -> Result<Escalation, HubError> {
        let mut script = self.lock();
        Self::check_up(&script)?;
        let escalation = match script.escalations.get_mut(&id.0) {
            Some(Ok(escalation)) => escalation,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(HubError::EscalationNotFound(id.0.clone())),
        };
        if escalation.status != EscalationStatus::Pending {
            return Err(HubError::AlreadyResolved(id.0.clone()));
        }
        escalation.status = EscalationStatus::Resolved;
        escalation.human_action = Some(response.action);
        escalation.human_response = response.response.clone();
        escalation.human_responder = Some(response.responder.clone());
        Ok(escalation.clone())
    }

    async fn health(&self) -> Result<HubHealth, HubError> {
        let script = self.lock();
        Self::check_up(&script)?;
        Ok(HubHealth {
            status: "healthy".to_owned(),
            version: "scripted".to_owned(),
        })
    }
}
