//! `InMemoryWorkflowRepository`: the repository contract in a mutex, for tests, examples and
//! embedding where durability does not matter.
//!
//! It keeps exactly the compare-and-set semantics of the durable stores: every call takes
//! one lock, so a commit's version check and its writes are one atomic step.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::consultation::{Consultation, ConsultationError, ConsultationId, ConsultationStatus};
use crate::event::{Event, EventFilter, EventSlice, EventType, NewEvent};
use crate::hub::HubSessionId;
use crate::repository::{
    Expiry, IdempotencyKey, Judge, KeyClaim, OverdueNote, Receipt, RepositoryError, StateCounts,
    WorkflowRepository,
};
use crate::state::WorkflowState;
use crate::values::FeatureId;
use crate::workflow::{Timestamp, Transition, Version, Workflow};

/// A workflow and its history, as the in-memory store keeps them.
#[derive(Debug, Clone)]
struct Entry {
    workflow: Workflow,
    history: Vec<Transition>,
    hub_session: Option<HubSessionId>,
    consultations: Vec<Consultation>,
    /// Reservations: `asking` consultations no reader sees yet.
    reserved: Vec<Consultation>,
    /// The `due_at` of every stay at the gate noted overdue.
    overdue_noted: Vec<Timestamp>,
}

/// An idempotency key as the in-memory store keeps it.
#[derive(Debug, Clone)]
struct KeyRow {
    fingerprint: String,
    answer: Option<String>,
    created_at: Timestamp,
    lease_until: Timestamp,
}

/// Workflows in memory, ordered by feature id. Nothing survives the process.
#[derive(Debug, Default)]
pub struct InMemoryWorkflowRepository {
    entries: Mutex<BTreeMap<FeatureId, Entry>>,
    keys: Mutex<HashMap<IdempotencyKey, KeyRow>>,
    events: Mutex<EventLog>,
}

/// The event log: appended to while the entries' lock is held, so ids follow the changes'
/// order.
#[derive(Debug, Default)]
struct EventLog {
    events: Vec<Event>,
    last_id: u64,
    purged_through: u64,
}

impl InMemoryWorkflowRepository {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<FeatureId, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (each write is a
        // single insert or a version-checked replace), so a poisoned lock is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The keys; taken after [`Self::lock`] and before [`Self::log`] when they are needed
    /// together.
    fn keys(&self) -> MutexGuard<'_, HashMap<IdempotencyKey, KeyRow>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The event log; taken after [`Self::lock`] when both are needed.
    fn log(&self) -> MutexGuard<'_, EventLog> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends the events of a change; called with the entries' lock held.
    fn publish(&self, events: impl IntoIterator<Item = NewEvent>) {
        let mut log = self.log();
        for event in events {
            log.last_id += 1;
            let id = log.last_id;
            log.events.push(Event { id, event });
        }
    }

    /// Makes `workflow` (the snapshot after `transition`) `entry`'s, appends `transition`, and
    /// keeps its event and `receipt`: an accepted change. `keys` is [`Self::held`]'s.
    fn record(
        &self,
        entry: &mut Entry,
        workflow: &Workflow,
        transition: &Transition,
        receipt: Option<&Receipt>,
        keys: &mut HashMap<IdempotencyKey, KeyRow>,
    ) {
        entry.workflow = workflow.clone();
        entry.history.push(transition.clone());
        self.publish([NewEvent::transitioned(workflow, transition)]);
        Self::answer(keys, receipt);
    }

    /// The keys, once `receipt`'s claim is found still holding its key (else
    /// [`RepositoryError::KeyTakenOver`]); kept locked until the answer is stored, so no claim
    /// takes the key over in between.
    fn held(
        &self,
        receipt: Option<&Receipt>,
    ) -> Result<MutexGuard<'_, HashMap<IdempotencyKey, KeyRow>>, RepositoryError> {
        let keys = self.keys();
        match receipt {
            Some(receipt)
                if !keys.get(&receipt.key).is_some_and(|row| {
                    row.answer.is_none() && row.lease_until == receipt.lease_until
                }) =>
            {
                Err(RepositoryError::KeyTakenOver(receipt.key.key.clone()))
            }
            _ => Ok(keys),
        }
    }

    /// Stores the answer of a key [`Self::held`] found held.
    fn answer(keys: &mut HashMap<IdempotencyKey, KeyRow>, receipt: Option<&Receipt>) {
        if let Some(receipt) = receipt
            && let Some(row) = keys.get_mut(&receipt.key)
        {
            row.answer = Some(receipt.answer.clone());
        }
    }
}

#[async_trait]
impl WorkflowRepository for InMemoryWorkflowRepository {
    async fn create_with(
        &self,
        workflow: &Workflow,
        first: &Transition,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let mut entries = self.lock();
        let mut keys = self.held(receipt)?;
        if entries.contains_key(workflow.feature_id()) {
            return Err(RepositoryError::AlreadyExists(
                workflow.feature_id().clone(),
            ));
        }
        entries.insert(
            workflow.feature_id().clone(),
            Entry {
                workflow: workflow.clone(),
                history: vec![first.clone()],
                hub_session: None,
                consultations: Vec::new(),
                reserved: Vec::new(),
                overdue_noted: Vec::new(),
            },
        );
        self.publish([NewEvent::transitioned(workflow, first)]);
        Self::answer(&mut keys, receipt);
        Ok(())
    }

    async fn get(&self, feature_id: &FeatureId) -> Result<Workflow, RepositoryError> {
        self.lock()
            .get(feature_id)
            .map(|entry| entry.workflow.clone())
            .ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))
    }

    async fn list(
        &self,
        state: Option<WorkflowState>,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let entries = self.lock();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(entries
            .range::<FeatureId, _>((lower, Bound::Unbounded))
            .map(|(_, entry)| &entry.workflow)
            .filter(|workflow| state.is_none_or(|s| workflow.state() == s))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn summary(&self) -> Result<StateCounts, RepositoryError> {
        let entries = self.lock();
        Ok(StateCounts::from_pairs(
            entries.values().map(|entry| (entry.workflow.state(), 1)),
        ))
    }

    async fn list_overdue(
        &self,
        now: Timestamp,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let entries = self.lock();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(entries
            .range::<FeatureId, _>((lower, Bound::Unbounded))
            .map(|(_, entry)| &entry.workflow)
            .filter(|workflow| workflow.is_overdue(now))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn gates_by_due(&self, limit: u32) -> Result<Vec<Workflow>, RepositoryError> {
        let entries = self.lock();
        let mut gates: Vec<&Workflow> = entries
            .values()
            .map(|entry| &entry.workflow)
            .filter(|workflow| workflow.state() == WorkflowState::Gate1)
            .collect();
        // Feature-id order already (a BTreeMap); a stable sort keeps it among equals.
        gates.sort_by_key(|workflow| {
            let due = workflow.gate_due_at();
            (due.is_none(), due)
        });
        Ok(gates.into_iter().take(limit as usize).cloned().collect())
    }

    async fn count_overdue(&self, now: Timestamp) -> Result<u64, RepositoryError> {
        let entries = self.lock();
        Ok(entries
            .values()
            .filter(|entry| entry.workflow.is_overdue(now))
            .count() as u64)
    }

    async fn unnoted_overdue(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError> {
        let entries = self.lock();
        let mut due: Vec<&Workflow> = entries
            .values()
            .filter(|entry| {
                entry.workflow.is_overdue(now)
                    && entry
                        .workflow
                        .gate_due_at()
                        .is_some_and(|due| !entry.overdue_noted.contains(&due))
            })
            .map(|entry| &entry.workflow)
            .collect();
        due.sort_by_key(|workflow| workflow.gate_due_at());
        Ok(due.into_iter().take(limit as usize).cloned().collect())
    }

    async fn note_overdue(
        &self,
        note: &OverdueNote,
        expiry: Option<Expiry<'_>>,
    ) -> Result<bool, RepositoryError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(&note.feature_id)
            .ok_or_else(|| RepositoryError::NotFound(note.feature_id.clone()))?;
        // Noted already, or the stay ended meanwhile (a decision made in time).
        if entry.overdue_noted.contains(&note.due_at)
            || entry.workflow.gate_due_at() != Some(note.due_at)
        {
            return Ok(false);
        }
        if let Some(expiry) = &expiry
            && entry.workflow.version() != expiry.expected_version
        {
            return Err(RepositoryError::VersionConflict {
                expected: expiry.expected_version,
                actual: entry.workflow.version(),
            });
        }
        // The note's event first, then the change it brings.
        entry.overdue_noted.push(note.due_at);
        self.publish([NewEvent::gate_overdue(note)]);
        if let Some(expiry) = expiry {
            entry.workflow = expiry.workflow.clone();
            entry.history.push(expiry.transition.clone());
            self.publish([NewEvent::transitioned(expiry.workflow, expiry.transition)]);
        }
        Ok(true)
    }

    async fn history(&self, feature_id: &FeatureId) -> Result<Vec<Transition>, RepositoryError> {
        self.lock()
            .get(feature_id)
            .map(|entry| entry.history.clone())
            .ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))
    }

    async fn commit_with(
        &self,
        expected_version: Version,
        workflow: &Workflow,
        transition: &Transition,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(workflow.feature_id())
            .ok_or_else(|| RepositoryError::NotFound(workflow.feature_id().clone()))?;
        // In the order the SQL stores judge: the key's claim, what blocks the gate, then the
        // version.
        let mut keys = self.held(receipt)?;
        if transition.is_gated_approval() && entry.blockers().next().is_some() {
            return Err(RepositoryError::GateBlocked(workflow.feature_id().clone()));
        }
        if entry.workflow.version() != expected_version {
            return Err(RepositoryError::VersionConflict {
                expected: expected_version,
                actual: entry.workflow.version(),
            });
        }
        self.record(entry, workflow, transition, receipt, &mut keys);
        Ok(())
    }

    /// Read, judged and stored under the lock: nothing lands in between, so no conflict.
    async fn advance(
        &self,
        feature_id: &FeatureId,
        judge: Judge,
    ) -> Result<Workflow, crate::service::Error> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(feature_id)
            .ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))?;
        let decision = judge(&entry.workflow)?;
        let receipt = decision.receipt.as_ref();
        let mut keys = self.held(receipt)?;
        self.record(
            entry,
            &decision.next,
            &decision.transition,
            receipt,
            &mut keys,
        );
        Ok(decision.next)
    }

    async fn claim_key(
        &self,
        key: &IdempotencyKey,
        fingerprint: &str,
        now: Timestamp,
        lease_until: Timestamp,
        expired_before: Timestamp,
    ) -> Result<KeyClaim, RepositoryError> {
        let mut keys = self.keys();
        let fresh = KeyRow {
            fingerprint: fingerprint.to_owned(),
            answer: None,
            created_at: now,
            lease_until,
        };
        let Some(row) = keys.get_mut(key) else {
            keys.insert(key.clone(), fresh);
            return Ok(KeyClaim::Claimed);
        };
        // Expired, and held by no request (a retry that took it over just before keeps it).
        let held = row.answer.is_none() && row.lease_until >= now;
        if row.created_at < expired_before && !held {
            *row = fresh;
            return Ok(KeyClaim::Claimed);
        }
        if row.fingerprint != fingerprint {
            return Ok(KeyClaim::Reused);
        }
        match &row.answer {
            Some(answer) => Ok(KeyClaim::Answered(answer.clone())),
            None if row.lease_until < now => {
                row.lease_until = lease_until;
                Ok(KeyClaim::Claimed)
            }
            None => Ok(KeyClaim::InUse),
        }
    }

    async fn answer_key(&self, receipt: &Receipt) -> Result<(), RepositoryError> {
        let mut keys = self.held(Some(receipt))?;
        Self::answer(&mut keys, Some(receipt));
        Ok(())
    }

    async fn release_key(
        &self,
        key: &IdempotencyKey,
        lease_until: Timestamp,
    ) -> Result<(), RepositoryError> {
        let mut keys = self.keys();
        if keys
            .get(key)
            .is_some_and(|row| row.answer.is_none() && row.lease_until == lease_until)
        {
            keys.remove(key);
        }
        Ok(())
    }

    async fn forget_unanswered_keys(&self) -> Result<u64, RepositoryError> {
        let mut keys = self.keys();
        let count = keys.len();
        keys.retain(|_, row| row.answer.is_some());
        Ok((count - keys.len()) as u64)
    }

    async fn purge_keys(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let mut keys = self.keys();
        let count = keys.len();
        keys.retain(|_, row| row.created_at >= before);
        Ok((count - keys.len()) as u64)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        Ok(())
    }

    async fn events(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<EventSlice, RepositoryError> {
        let log = self.log();
        let events = log
            .events
            .iter()
            .filter(|e| e.id > after && filter.matches(&e.event))
            .take(limit as usize)
            .cloned()
            .collect();
        Ok(EventSlice {
            events,
            purged_through: log.purged_through,
            last_id: log.last_id,
            unreadable: Vec::new(),
            scanned_through: None,
        })
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let mut log = self.log();
        // Up to the first event made at or after `before` (one committed late with an old time
        // does not take the newer ones before it along).
        let Some(through) = log
            .events
            .iter()
            .take_while(|e| e.event.time < before)
            .map(|e| e.id)
            .last()
        else {
            return Ok(0);
        };
        let count = log.events.len();
        log.events.retain(|e| e.id > through);
        log.purged_through = log.purged_through.max(through);
        Ok((count - log.events.len()) as u64)
    }

    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError> {
        self.with_entry(feature_id, |entry| entry.hub_session.clone())
    }

    async fn swap_hub_session(
        &self,
        feature_id: &FeatureId,
        expected: Option<&HubSessionId>,
        new: &HubSessionId,
    ) -> Result<HubSessionId, RepositoryError> {
        self.with_entry(feature_id, |entry| {
            if entry.hub_session.as_ref() == expected {
                entry.hub_session = Some(new.clone());
            }
            entry.hub_session.clone().unwrap_or_else(|| new.clone())
        })
    }

    async fn add_consultation_with(
        &self,
        consultation: &Consultation,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        self.with_entry(&consultation.feature_id, |entry| {
            let mut keys = self.held(receipt)?;
            entry.check_active()?;
            entry.reserved.retain(|c| c.id != consultation.id);
            entry.consultations.push(consultation.clone());
            self.publish([NewEvent::consultation(
                EventType::ConsultationCreated,
                consultation,
            )]);
            Self::answer(&mut keys, receipt);
            Ok(())
        })?
    }

    async fn reserve_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError> {
        self.with_entry(&consultation.feature_id, |entry| {
            entry.check_active()?;
            entry.reserved.push(consultation.clone());
            Ok(())
        })?
    }

    async fn drop_reservation(
        &self,
        feature_id: &FeatureId,
        id: ConsultationId,
    ) -> Result<(), RepositoryError> {
        self.with_entry(feature_id, |entry| entry.reserved.retain(|c| c.id != id))
    }

    async fn update_consultation_with(
        &self,
        consultation: &Consultation,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        self.with_entry(&consultation.feature_id, |entry| {
            let mut keys = self.held(receipt)?;
            let answers_an_ask = consultation.status != ConsultationStatus::Failed
                && entry
                    .consultations
                    .iter()
                    .any(|c| c.id == consultation.id && c.status == ConsultationStatus::Asking);
            if answers_an_ask {
                entry.check_active()?;
            }
            if let Some(stored) = entry
                .consultations
                .iter_mut()
                .find(|c| c.id == consultation.id && c.blocks_gate())
            {
                *stored = consultation.clone();
                self.publish([NewEvent::consultation(
                    EventType::ConsultationUpdated,
                    consultation,
                )]);
            }
            Self::answer(&mut keys, receipt);
            Ok(())
        })?
    }

    async fn interrupt_asks(
        &self,
        asked_before: Timestamp,
        error: &ConsultationError,
        at: Timestamp,
    ) -> Result<u64, RepositoryError> {
        let mut failed = 0;
        for entry in self.lock().values_mut() {
            entry.reserved.retain(|c| c.created_at >= asked_before);
            for c in &mut entry.consultations {
                if c.status == ConsultationStatus::Asking && c.created_at < asked_before {
                    c.fail(error.clone(), at);
                    self.publish([NewEvent::consultation(EventType::ConsultationUpdated, c)]);
                    failed += 1;
                }
            }
        }
        Ok(failed)
    }

    async fn consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>, RepositoryError> {
        self.with_entry(feature_id, |entry| {
            let mut consultations = entry.consultations.clone();
            // Oldest first, as every store orders them.
            consultations.sort_by_key(|c| (c.created_at, c.id));
            consultations
        })
    }

    async fn gate_blockers(
        &self,
        feature_ids: &[FeatureId],
    ) -> Result<Vec<Consultation>, RepositoryError> {
        let entries = self.lock();
        let mut blockers: Vec<Consultation> = feature_ids
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|id| entries.get(id))
            .flat_map(Entry::blockers)
            .cloned()
            .collect();
        blockers.sort_by_key(|c| (c.created_at, c.id));
        Ok(blockers)
    }
}

impl Entry {
    /// The published consultations that block the gate (a reservation holds nothing).
    fn blockers(&self) -> impl Iterator<Item = &Consultation> {
        self.consultations.iter().filter(|c| c.blocks_gate())
    }

    /// Consultations are stored only while the workflow is active.
    fn check_active(&self) -> Result<(), RepositoryError> {
        let state = self.workflow.state();
        if state.is_active() {
            Ok(())
        } else {
            Err(RepositoryError::NotActive {
                feature_id: self.workflow.feature_id().clone(),
                state,
            })
        }
    }
}

impl InMemoryWorkflowRepository {
    fn with_entry<R>(
        &self,
        feature_id: &FeatureId,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> Result<R, RepositoryError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(feature_id)
            .ok_or_else(|| RepositoryError::NotFound(feature_id.clone()))?;
        Ok(f(entry))
    }
}
