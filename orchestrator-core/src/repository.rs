//! The storage boundary: what the orchestrator needs from any store of workflows.
//!
//! **API boundary.** Implementations live elsewhere (the in-memory one in `memory`, feature
//! `test-util`, diesel ones in the server); they translate their own failures into
//! [`RepositoryError`]. Core never sees a table.

use std::collections::BTreeMap;
use std::error::Error as StdError;

use async_trait::async_trait;

use crate::consultation::{Consultation, ConsultationError, ConsultationId};
use crate::event::{EventFilter, EventSlice};
use crate::gate::OnExpiry;
use crate::hub::HubSessionId;
use crate::state::WorkflowState;
use crate::values::{FeatureId, ValidationError};
use crate::workflow::{Timestamp, Transition, Version, Workflow};

/// A boxed error from a storage back end.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Decides a change of a workflow from the workflow as stored (see
/// [`WorkflowRepository::advance`]), or why the change is refused.
pub type Judge = Box<dyn Fn(&Workflow) -> Result<Decision, crate::service::Error> + Send + Sync>;

/// What a [`Judge`] decided.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The workflow after the transition.
    pub next: Workflow,
    /// The transition, the history entry to append.
    pub transition: Transition,
    /// The answer to keep for the request's idempotency key, stored only if the change is.
    pub receipt: Option<Receipt>,
}

impl Decision {
    /// The decision to apply `transition` to `current`, with no answer to keep.
    pub fn of(current: &Workflow, transition: Transition) -> Self {
        let mut next = current.clone();
        next.record(&transition);
        Decision {
            next,
            transition,
            receipt: None,
        }
    }
}

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// No workflow has this feature id (HTTP 404 `WORKFLOW_NOT_FOUND`).
    #[error("workflow '{0}' not found")]
    NotFound(FeatureId),
    /// A workflow with this feature id exists already (HTTP 409 `WORKFLOW_ALREADY_EXISTS`).
    #[error("workflow '{0}' already exists")]
    AlreadyExists(FeatureId),
    /// The workflow is not in an active state (HTTP 409 `WORKFLOW_NOT_ACTIVE`): it was
    /// cancelled or completed before a consultation of it could be stored.
    #[error("workflow '{feature_id}' is {state}")]
    NotActive {
        /// The workflow.
        feature_id: FeatureId,
        /// Its state when the write was judged.
        state: WorkflowState,
    },
    /// The compare-and-set lost: the stored version is not the one expected
    /// (HTTP 409 `VERSION_CONFLICT`).
    #[error("version conflict: expected {expected}, current {actual}")]
    VersionConflict {
        /// The version the caller based its change on.
        expected: Version,
        /// The version stored now.
        actual: Version,
    },
    /// An approval's commit found a consultation blocking the gate that its judge did not
    /// see (one reserved or published since the judge's facts were read): nothing stored.
    /// The service judges the approval again on fresh facts (HTTP 409 `GATE_BLOCKED`).
    #[error("workflow '{0}': a consultation blocks the gate")]
    GateBlocked(FeatureId),
    /// A change sealed with an idempotency key's answer, or the answer alone, found the key no
    /// longer held by the claim that made it: its lease ended and a retry with the key took it
    /// over (or the key expired and was claimed anew). Nothing stored; the retry's change and
    /// answer are the key's (HTTP 409 `IDEMPOTENCY_KEY_IN_USE`).
    #[error("idempotency key '{0}' is held by another request now")]
    KeyTakenOver(String),
    /// The store cannot be reached (HTTP 503 `DATABASE_UNAVAILABLE`).
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Any other storage failure; a bug or a corrupt store (HTTP 500 `INTERNAL`).
    #[error("storage failure: {0}")]
    Backend(#[source] BoxError),
}

/// What page of workflows to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only workflows in this state.
    pub state: Option<WorkflowState>,
    /// Only workflows whose stay at the gate is past its deadline.
    pub overdue: bool,
    /// Only workflows whose feature id sorts after this one (the cursor).
    pub after: Option<FeatureId>,
    /// At most this many.
    pub limit: PageLimit,
}

/// How many workflows one page holds: 1–500, 50 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageLimit(u32);

impl PageLimit {
    /// The largest page.
    pub const MAX: u32 = 500;
    /// The page size when the caller names none.
    pub const DEFAULT: PageLimit = PageLimit(50);

    /// Parses a requested page size.
    pub fn parse(limit: u32) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&limit) {
            Ok(PageLimit(limit))
        } else {
            Err(ValidationError::new(
                "limit",
                format!("must be a whole number between 1 and {}", Self::MAX),
            ))
        }
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        PageLimit::DEFAULT
    }
}

/// One page of workflows, ordered by feature id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The workflows on this page.
    pub items: Vec<Workflow>,
    /// Where the next page starts (exclusive), or `None` on the last page.
    pub next_after: Option<FeatureId>,
}

/// How many workflows are in each state; every state is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCounts(BTreeMap<WorkflowState, u64>);

impl StateCounts {
    /// Counts from `(state, count)` pairs; states not named count zero.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (WorkflowState, u64)>) -> Self {
        let mut counts: BTreeMap<_, _> = WorkflowState::ALL.into_iter().map(|s| (s, 0)).collect();
        for (state, count) in pairs {
            *counts.entry(state).or_default() += count;
        }
        StateCounts(counts)
    }

    /// The count for one state.
    pub fn get(&self, state: WorkflowState) -> u64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    /// The sum over all states.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Every state with its count, in life-cycle order.
    pub fn as_map(&self) -> &BTreeMap<WorkflowState, u64> {
        &self.0
    }
}

/// The record that a stay at the gate went past its deadline: kept once per stay (the
/// workflow and the stay's `due_at` are its key), whichever server saw it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueNote {
    /// The workflow.
    pub feature_id: FeatureId,
    /// When the stay was due.
    pub due_at: Timestamp,
    /// When the deadline was seen passed.
    pub noted_at: Timestamp,
    /// What the policy does past the deadline.
    pub on_expiry: OnExpiry,
    /// The approvals the stay had when its deadline was seen passed, oldest first.
    pub approvals: Vec<crate::gate::Approval>,
}

/// The change the system makes to a gate past its deadline (`on_expiry` `reject` or
/// `cancel`): a compare-and-set like [`WorkflowRepository::commit`]'s.
#[derive(Debug, Clone, Copy)]
pub struct Expiry<'a> {
    /// The version the change was judged against.
    pub expected_version: Version,
    /// The snapshot after `transition`.
    pub workflow: &'a Workflow,
    /// The system's transition.
    pub transition: &'a Transition,
}

/// An idempotency key as the store keeps it: the caller's key within its scope (a principal,
/// or every caller when the server knows no principals).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// Whose key it is.
    pub scope: String,
    /// The key the caller chose.
    pub key: String,
}

/// The stored answer to a request made with an idempotency key. The answer is opaque to the
/// orchestrator: the server encodes it and replays it as it was. `Debug` shows its length, not
/// the answer (which may hold a secret: a new webhook's).
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The key.
    pub key: IdempotencyKey,
    /// The lease the claim took (`lease_until` of [`WorkflowRepository::claim_key`]): it names
    /// the claim. The answer, and the change it answers, are stored only while the key is
    /// unanswered and still under this lease; a retry that took the key over set another.
    pub lease_until: Timestamp,
    /// The answer, as the server encoded it.
    pub answer: String,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("key", &self.key)
            .field("lease_until", &self.lease_until)
            .field("answer", &format_args!("<{} bytes>", self.answer.len()))
            .finish()
    }
}

/// What the store knew of an idempotency key when a request claimed it. `Debug` shows an
/// answer's length, not the answer.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// New (or expired, or abandoned by a stopped server): the request is now the key's, to run.
    Claimed,
    /// Another request with the key is still being answered.
    InUse,
    /// The key was used for a different request (method, path, `If-Match` or body).
    Reused,
    /// Answered before: this is the stored answer.
    Answered(String),
}

impl std::fmt::Debug for KeyClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyClaim::Claimed => f.write_str("Claimed"),
            KeyClaim::InUse => f.write_str("InUse"),
            KeyClaim::Reused => f.write_str("Reused"),
            KeyClaim::Answered(answer) => f
                .debug_tuple("Answered")
                .field(&format_args!("<{} bytes>", answer.len()))
                .finish(),
        }
    }
}

/// The counts of `GET /workflows/summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// How many workflows are in each state.
    pub counts: StateCounts,
    /// How many stays at the gate are past their deadline.
    pub overdue: u64,
}

/// A store of workflows and their histories.
///
/// Every implementation gives the same guarantees, which the contract tests check:
/// `create` stores a workflow and its first transition together or not at all, and `commit`
/// is one compare-and-set on `(feature_id, version)` that stores the new snapshot and its
/// history entry together or not at all.
#[async_trait]
pub trait WorkflowRepository: Send + Sync {
    /// Stores a new workflow with its first transition; refuses an existing feature id with
    /// [`RepositoryError::AlreadyExists`].
    async fn create(&self, workflow: &Workflow, first: &Transition) -> Result<(), RepositoryError> {
        self.create_with(workflow, first, None).await
    }

    /// [`WorkflowRepository::create`], storing `receipt` (the answer to the request, if it
    /// came with an idempotency key) in the same transaction. A receipt whose claim no longer
    /// holds its key refuses the write ([`RepositoryError::KeyTakenOver`]): nothing stored.
    async fn create_with(
        &self,
        workflow: &Workflow,
        first: &Transition,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError>;

    /// The workflow for a feature id.
    async fn get(&self, feature_id: &FeatureId) -> Result<Workflow, RepositoryError>;

    /// Workflows ordered by feature id, after `query.after`, in `query.state`, at most
    /// `limit` of them. Paging (the next cursor) is the caller's business.
    async fn list(
        &self,
        state: Option<WorkflowState>,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError>;

    /// How many workflows are in each state.
    async fn summary(&self) -> Result<StateCounts, RepositoryError>;

    /// Workflows whose stay at the gate was due before `now`, ordered by feature id, after
    /// `after`, at most `limit` of them.
    async fn list_overdue(
        &self,
        now: Timestamp,
        after: Option<&FeatureId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError>;

    /// Workflows at the gate, the earliest due first (those without a deadline last, by
    /// feature id), at most `limit` of them: what a reviewer should see first.
    async fn gates_by_due(&self, limit: u32) -> Result<Vec<Workflow>, RepositoryError>;

    /// How many workflows' stays at the gate were due before `now`.
    async fn count_overdue(&self, now: Timestamp) -> Result<u64, RepositoryError>;

    /// Workflows whose stay at the gate was due before `now` and has no [`OverdueNote`] yet,
    /// the longest overdue first, at most `limit` of them.
    async fn unnoted_overdue(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepositoryError>;

    /// Keeps `note` unless one is kept for the same stay already (`Ok(false)`: nothing
    /// written). With `expiry`, the system's change is committed in the same transaction, as
    /// a compare-and-set: if it loses ([`RepositoryError::VersionConflict`]), neither is
    /// kept. So every stay gets one note, and a stay acted on has exactly one.
    async fn note_overdue(
        &self,
        note: &OverdueNote,
        expiry: Option<Expiry<'_>>,
    ) -> Result<bool, RepositoryError>;

    /// A workflow's transitions, oldest first.
    async fn history(&self, feature_id: &FeatureId) -> Result<Vec<Transition>, RepositoryError>;

    /// Stores `workflow` (the snapshot after `transition`) and appends `transition`, if and
    /// only if the stored version is still `expected_version`; otherwise
    /// [`RepositoryError::VersionConflict`] and nothing changes.
    async fn commit(
        &self,
        expected_version: Version,
        workflow: &Workflow,
        transition: &Transition,
    ) -> Result<(), RepositoryError> {
        self.commit_with(expected_version, workflow, transition, None)
            .await
    }

    /// [`WorkflowRepository::commit`], storing `receipt` (the answer to the request, if it
    /// came with an idempotency key) in the same transaction, only if the commit lands (and only
    /// while the receipt's claim holds its key: else [`RepositoryError::KeyTakenOver`]).
    ///
    /// An approval (`human_approved` without `override`) lands only if, at the moment it
    /// commits, no published consultation of the workflow blocks the gate
    /// ([`Consultation::blocks_gate`]; a reservation holds nothing); otherwise
    /// [`RepositoryError::GateBlocked`] and nothing changes.
    /// Its judge saw none (a blocker refuses an approval), so one found here was stored while
    /// it was judged; a consultation stored after the approval lands finds the gate passed.
    async fn commit_with(
        &self,
        expected_version: Version,
        workflow: &Workflow,
        transition: &Transition,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError>;

    /// Reads the workflow, lets `judge` decide its next snapshot and transition, and stores
    /// them (with the decision's receipt) as [`WorkflowRepository::commit_with`] does;
    /// answers the snapshot stored, or the judge's refusal (nothing stored then). No other
    /// change to the workflow lands between the read and the write.
    ///
    /// The default reads, judges and then commits with a compare-and-set: a change that lands
    /// in between refuses this one with a version conflict. A store may judge inside its
    /// write instead, so that concurrent advances are judged in turn: the memory store under
    /// its lock, SQLite on its writer thread (one hand-off instead of a read and then a
    /// write), PostgreSQL in its advance batches (one read for the batch, and an advance whose
    /// workflow changed before the batch committed judged again). A store may call `judge`
    /// more than once, each time on the workflow as then stored, so a judge must be a pure
    /// decision.
    ///
    /// A judge is given no facts from outside the workflow, so this is not for an approval the
    /// gate's rules decide (one a pending consultation blocks): a store's own implementation
    /// need not check the gate's blockers (the default, through `commit_with`, does), and the
    /// orchestrator judges such an approval on a read and stores it with
    /// [`WorkflowRepository::commit_with`].
    async fn advance(
        &self,
        feature_id: &FeatureId,
        judge: Judge,
    ) -> Result<Workflow, crate::service::Error> {
        let current = self.get(feature_id).await?;
        let decision = judge(&current)?;
        self.commit_with(
            current.version(),
            &decision.next,
            &decision.transition,
            decision.receipt.as_ref(),
        )
        .await?;
        Ok(decision.next)
    }

    /// Claims `key` for a request whose method, path and body hash to `fingerprint`, at
    /// `now`. A key unknown, or first claimed before `expired_before`, or still unanswered with
    /// its lease ended, is claimed anew with a lease until `lease_until`.
    async fn claim_key(
        &self,
        key: &IdempotencyKey,
        fingerprint: &str,
        now: Timestamp,
        lease_until: Timestamp,
        expired_before: Timestamp,
    ) -> Result<KeyClaim, RepositoryError>;

    /// Stores the answer of a claimed key that has none yet, while the claim that made
    /// `receipt` still holds it; otherwise [`RepositoryError::KeyTakenOver`] and nothing
    /// changes (an answer stored with the change it made stays).
    async fn answer_key(&self, receipt: &Receipt) -> Result<(), RepositoryError>;

    /// Forgets a key that has no answer and is still held by the claim that took the lease
    /// `lease_until` (the request failed in a way worth retrying); a key a retry took over
    /// stays its.
    async fn release_key(
        &self,
        key: &IdempotencyKey,
        lease_until: Timestamp,
    ) -> Result<(), RepositoryError>;

    /// Forgets every key that has no answer, and returns how many: the claims of requests a
    /// stopped server left, which would otherwise answer their retries
    /// `IDEMPOTENCY_KEY_IN_USE` until their leases end. Only for a server alone on its store,
    /// before it serves: beside other servers it would free keys of requests under way. The
    /// default forgets nothing (the leases are then waited out).
    async fn forget_unanswered_keys(&self) -> Result<u64, RepositoryError> {
        Ok(0)
    }

    /// Forgets the keys first claimed before `before`; returns how many. A store may take a
    /// large backlog over several calls (the SQL stores delete up to a million a call, 10 000
    /// per transaction, oldest first).
    async fn purge_keys(&self, before: Timestamp) -> Result<u64, RepositoryError>;

    /// Whether the store answers and accepts writes now; `/health` uses it. Durable stores
    /// write to prove it: a store whose reads work while every write fails (a full disk, a
    /// read-only file) is not healthy.
    async fn ping(&self) -> Result<(), RepositoryError>;

    /// Up to `limit` events with ids above `after` that pass `filter`, in id order, with the
    /// log's bounds read after them (a store may stop short with more after the page, and says
    /// where in [`EventSlice::scanned_through`]). Every accepted change (`create`, `commit`, a visible
    /// consultation added or changed, an overdue stay noted) wrote its event in the same
    /// transaction, and ids become visible in the order they were given, with no gaps.
    async fn events(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<EventSlice, RepositoryError>;

    /// Deletes the oldest events, up to the first one made at or after `before` (so the log
    /// never has a hole, and an event committed late with an old time takes no newer event
    /// along), and returns how many.
    async fn purge_events(&self, before: Timestamp) -> Result<u64, RepositoryError>;

    /// Finishes the writes already accepted and releases the store; later writes fail as
    /// unavailable. Called once, when the service stops. The default does nothing.
    async fn close(&self) {}

    /// The Agent Hub session kept for a workflow, if one was opened.
    async fn hub_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Option<HubSessionId>, RepositoryError>;

    /// Stores `new` as the workflow's hub session if the stored one is still `expected`
    /// (`None`: no session yet). Returns the session stored afterwards: `new`, or the one a
    /// concurrent caller stored first, which the caller should use instead.
    async fn swap_hub_session(
        &self,
        feature_id: &FeatureId,
        expected: Option<&HubSessionId>,
        new: &HubSessionId,
    ) -> Result<HubSessionId, RepositoryError>;

    /// Stores a consultation of an existing workflow where every reader sees it — a new one,
    /// or one that takes the place of its own reservation — if the workflow is still active
    /// (PHASE_1, GATE_1 or PHASE_2): judged in the same transaction that stores it, so a
    /// cancel that lands first wins ([`RepositoryError::NotActive`]).
    async fn add_consultation(&self, consultation: &Consultation) -> Result<(), RepositoryError> {
        self.add_consultation_with(consultation, None).await
    }

    /// [`WorkflowRepository::add_consultation`], storing `receipt` (the answer to the request,
    /// if it came with an idempotency key) in the same transaction, only if it is stored (and only
    /// while the receipt's claim holds its key: else [`RepositoryError::KeyTakenOver`]).
    async fn add_consultation_with(
        &self,
        consultation: &Consultation,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError>;

    /// Stores an `asking` consultation as a reservation: kept, but seen by no reader (no
    /// listing, event or [`WorkflowRepository::gate_blockers`]) until
    /// [`WorkflowRepository::add_consultation`] publishes it or
    /// [`WorkflowRepository::drop_reservation`] removes it. Judged like `add_consultation`.
    async fn reserve_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError>;

    /// Removes a reservation; a published consultation is never removed.
    async fn drop_reservation(
        &self,
        feature_id: &FeatureId,
        id: ConsultationId,
    ) -> Result<(), RepositoryError>;

    /// Stores a changed consultation, if the stored one is published and still `asking` or
    /// `pending_human`; a settled consultation is never changed again. An ask's answer (any
    /// ending but a failure, over an `asking` one) is stored only while the workflow is active,
    /// judged in the write: a cancel (or the work's end) that landed while the hub was asked
    /// wins ([`RepositoryError::NotActive`]), as for a new consultation.
    async fn update_consultation(
        &self,
        consultation: &Consultation,
    ) -> Result<(), RepositoryError> {
        self.update_consultation_with(consultation, None).await
    }

    /// [`WorkflowRepository::update_consultation`], storing `receipt` (the answer to the
    /// request, if it came with an idempotency key) in the same transaction; a receipt whose
    /// claim no longer holds its key refuses the write ([`RepositoryError::KeyTakenOver`]).
    async fn update_consultation_with(
        &self,
        consultation: &Consultation,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError>;

    /// Ends the asks left behind by a server that stopped: reservations made before
    /// `asked_before` are dropped, and published `asking` consultations made before it become
    /// `failed` with `error`, changed at `at`. Returns how many consultations failed.
    async fn interrupt_asks(
        &self,
        asked_before: Timestamp,
        error: &ConsultationError,
        at: Timestamp,
    ) -> Result<u64, RepositoryError>;

    /// A workflow's published consultations, oldest first.
    async fn consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<Vec<Consultation>, RepositoryError>;

    /// The published consultations that block these workflows' gates
    /// ([`Consultation::blocks_gate`]), oldest first (one read for a page of gates): what an
    /// approval is judged on. A reservation (an ask still inside its wait) is seen by no gate,
    /// as by no listing: it holds the gate from when it is published. Unknown ids hold nothing.
    async fn gate_blockers(
        &self,
        feature_ids: &[FeatureId],
    ) -> Result<Vec<Consultation>, RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_answer_is_never_printed() {
        let answer = r#"{"secret":"whsec_c2VjcmV0"}"#.to_owned();
        let receipt = Receipt {
            key: IdempotencyKey {
                scope: "admin".into(),
                key: "k-1".into(),
            },
            lease_until: Timestamp::default(),
            answer: answer.clone(),
        };
        for shown in [
            format!("{receipt:?}"),
            format!("{:?}", KeyClaim::Answered(answer)),
        ] {
            assert!(!shown.contains("whsec_"), "{shown}");
            assert!(shown.contains("<27 bytes>"), "{shown}");
        }
        assert_eq!(format!("{:?}", KeyClaim::InUse), "InUse");
    }
}
