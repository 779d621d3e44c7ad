//! Every write the store makes, described once for both back ends: what it stores
//! ([`Write`]), and what it decided ([`Written`]). Each back end carries a `Write` out inside
//! a transaction its caller opened; a write refused by a rule writes nothing, so it can share
//! a transaction with others.

use std::panic::AssertUnwindSafe;

use orchestrator_core::consultation::{ConsultationError, ConsultationStatus};
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{
    Consultation, EventType, Expiry, FeatureId, IdempotencyKey, Judge, KeyClaim, NewEvent,
    OverdueNote, Receipt, RepositoryError, Timestamp, Transition, Version, Workflow,
};

use super::models::{
    ConsultationRow, KeyRow, NewEventRow, OverdueNoteRow, ReceiptRow, TransitionRow,
    WorkflowChanges, WorkflowRow, enum_text, micros, to_i64,
};

/// One write, with everything it needs, owned (it may cross to the SQLite writer thread).
#[derive(Debug)]
pub enum Write {
    /// A new workflow with its first transition and its event, and the answer to keep for the
    /// request's idempotency key.
    Create(
        FeatureId,
        WorkflowRow,
        TransitionRow,
        NewEventRow,
        Option<ReceiptRow>,
    ),
    /// The compare-and-set of an advance.
    Commit(Commit),
    /// Set a workflow's hub session if the stored one is `expected` (or none is stored).
    SwapSession {
        /// The workflow.
        feature_id: FeatureId,
        /// The session expected to be stored now.
        expected: Option<String>,
        /// The new session.
        new: String,
    },
    /// A consultation of an active workflow: new, or in place of its reservation. The row
    /// says whether readers see it; a visible one has its `consultation.created` event.
    AddConsultation(
        FeatureId,
        ConsultationRow,
        Option<NewEventRow>,
        Option<ReceiptRow>,
    ),
    /// A changed consultation of this workflow, stored (with its `consultation.updated` event)
    /// only over a published `asking` or `pending_human` one; an ask's answer (see
    /// [`answers_an_ask`]) only while the workflow is active.
    UpdateConsultation(FeatureId, ConsultationRow, NewEventRow, Option<ReceiptRow>),
    /// Removes a reservation (by consultation id).
    DropReservation(String),
    /// Ends the asks of a server that stopped: drops reservations made before `asked_before`
    /// and fails the published `asking` consultations made before it (each with its
    /// `consultation.updated` event).
    InterruptAsks {
        /// Unix microseconds.
        asked_before: i64,
        /// Unix microseconds: the failed consultations' `updated_at`.
        at: i64,
        /// The failure's code.
        code: String,
        /// The failure's message.
        message: String,
    },
    /// Notes a stay at the gate past its deadline, unless it is noted already (then
    /// `Count(0)` and nothing else is written); with a commit, the system's change goes in
    /// the same transaction, and a lost compare-and-set keeps neither (`Refused`). The note's
    /// `gate.overdue` event goes with it.
    NoteOverdue(OverdueNoteRow, NewEventRow, Option<Commit>),
    /// Claims an idempotency key (see `WorkflowRepository::claim_key`); answers `Claim`.
    ClaimKey {
        /// The key as a fresh claim stores it.
        row: KeyRow,
        /// Unix microseconds: a key first claimed before this has expired.
        expired_before: i64,
    },
    /// Stores a claimed key's answer while its claim holds the key; refused with
    /// `KeyTakenOver` otherwise.
    AnswerKey(ReceiptRow),
    /// Forgets a key that has no answer and is still held by the claim that took the lease
    /// (Unix microseconds): `(scope, name, lease_until)`.
    ReleaseKey(String, String, i64),
    /// Forgets every key that has no answer (claims a stopped server left); answers `Count`.
    ForgetUnansweredKeys,
    /// Forgets a chunk of the keys first claimed before this (Unix microseconds), the oldest:
    /// [`PURGE_CHUNK`] of them, a few more where claims share a microsecond; answers `Count`.
    PurgeKeys(i64),
    /// Forgets the events before the first one made at or after this (Unix microseconds), but
    /// none a webhook has yet to turn into deliveries, and at most [`PURGE_CHUNK`] (see
    /// [`purge_through`] and [`purge_in_chunks`]); answers `Count`.
    PurgeEvents(i64),
    /// Many new workflows at once (seeding): all or none; no events.
    Import(Vec<WorkflowRow>, Vec<TransitionRow>),
    /// Rewrites the one probe row with this time (Unix microseconds): proves writes succeed.
    Probe(i64),
    /// A webhook's or a delivery's change.
    Webhook(super::webhooks::WebhookWrite),
    /// A board session's write.
    BoardSession(super::sessions::SessionWrite),
}

/// The compare-and-set of an advance: the new snapshot and its history row, if the stored
/// version is still `expected`.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The workflow.
    pub feature_id: FeatureId,
    /// The version the change was based on.
    pub expected: i64,
    /// The snapshot's columns after the transition.
    pub changes: WorkflowChanges,
    /// The transition.
    pub history: TransitionRow,
    /// The answer to keep for the request's idempotency key, if the commit lands.
    pub receipt: Option<ReceiptRow>,
    /// The `workflow.transitioned` event, stored if the commit lands.
    pub event: NewEventRow,
    /// An approval judged by the gate's rules: it lands only while no consultation of the
    /// workflow blocks the gate, reservations included (`RepositoryError::GateBlocked`).
    pub gated: bool,
}

impl Commit {
    /// The compare-and-set storing `workflow`, the snapshot after `transition`.
    pub fn new(expected: Version, workflow: &Workflow, transition: &Transition) -> Self {
        Commit {
            feature_id: workflow.feature_id().clone(),
            expected: to_i64(expected),
            changes: WorkflowChanges::from(workflow),
            history: TransitionRow::new(workflow.feature_id(), transition),
            receipt: None,
            event: NewEventRow::transitioned(workflow.feature_id(), transition),
            gated: transition.is_gated_approval(),
        }
    }
}

/// What judging an advance against its stored row came to.
pub enum Verdict {
    /// Accepted: store this commit; the workflow after it is the answer once it lands.
    Commit(Box<Commit>, Workflow),
    /// Decided without writing: no such workflow, the judge's refusal, or a failure.
    Answer(Written),
}

/// Judges an advance of `feature_id` against its stored `row` (`None`: no such workflow). A
/// judge that panics refuses its advance alone (a storage failure); the store goes on.
pub fn judge_advance(feature_id: &FeatureId, row: Option<WorkflowRow>, judge: &Judge) -> Verdict {
    let current = match super::models::workflow(feature_id, row) {
        Ok(current) => current,
        Err(refusal) => return Verdict::Answer(Written::Refused(refusal)),
    };
    let decided = match std::panic::catch_unwind(AssertUnwindSafe(|| judge(&current))) {
        Ok(decided) => decided,
        Err(_) => {
            let panicked = format!("judging an advance of '{feature_id}' panicked");
            return Verdict::Answer(Written::Refused(RepositoryError::Backend(panicked.into())));
        }
    };
    match decided {
        Ok(decision) => {
            let mut commit = Commit::new(current.version(), &decision.next, &decision.transition);
            commit.receipt = decision.receipt.as_ref().map(ReceiptRow::from);
            Verdict::Commit(Box::new(commit), decision.next)
        }
        Err(refusal) => Verdict::Answer(Written::Judged(Box::new(Err(refusal)))),
    }
}

/// What a claim does after finding the key stored (and not expired): `(fingerprint,
/// answer, lease_until)` as stored, judged for a request hashing to `fingerprint` at `now`.
pub enum ClaimStep {
    /// Decided: this is the answer.
    Decided(KeyClaim),
    /// Unanswered with its lease ended: take it over, if no other request did first.
    TakeOver,
}

/// Judges a stored key for a claim.
pub fn judge_claim(
    stored: (String, Option<String>, i64),
    fingerprint: &str,
    now: i64,
) -> ClaimStep {
    let (stored_fingerprint, answer, lease_until) = stored;
    if stored_fingerprint != fingerprint {
        return ClaimStep::Decided(KeyClaim::Reused);
    }
    match answer {
        Some(answer) => ClaimStep::Decided(KeyClaim::Answered(answer)),
        None if lease_until < now => ClaimStep::TakeOver,
        None => ClaimStep::Decided(KeyClaim::InUse),
    }
}

/// What a write decided.
#[derive(Debug)]
pub enum Written {
    /// Stored.
    Done,
    /// The hub session stored after a swap: the new one, or the one a concurrent caller stored
    /// first.
    Session(HubSessionId),
    /// How many rows changed.
    Count(u64),
    /// What an idempotency key's claim found.
    Claim(KeyClaim),
    /// The deliveries a claim leased.
    Due(Vec<super::webhooks::DueDelivery>),
    /// Refused by a rule; nothing was written.
    Refused(RepositoryError),
    /// What an advance judged in the store's write decided: the workflow stored, or the
    /// judge's refusal (nothing written).
    Judged(Box<Result<Workflow, orchestrator_core::Error>>),
}

impl Write {
    /// Stores a new workflow with its first transition (and `receipt`).
    pub fn create(workflow: &Workflow, first: &Transition, receipt: Option<&Receipt>) -> Self {
        Write::Create(
            workflow.feature_id().clone(),
            WorkflowRow::from(workflow),
            TransitionRow::new(workflow.feature_id(), first),
            NewEventRow::transitioned(workflow.feature_id(), first),
            receipt.map(ReceiptRow::from),
        )
    }

    /// The compare-and-set storing `workflow`, the snapshot after `transition` (and
    /// `receipt`, if it lands).
    pub fn commit(
        expected: Version,
        workflow: &Workflow,
        transition: &Transition,
        receipt: Option<&Receipt>,
    ) -> Self {
        let mut commit = Commit::new(expected, workflow, transition);
        commit.receipt = receipt.map(ReceiptRow::from);
        Write::Commit(commit)
    }

    /// Claims `key` for a request hashing to `fingerprint`.
    pub fn claim_key(
        key: &IdempotencyKey,
        fingerprint: &str,
        now: Timestamp,
        lease_until: Timestamp,
        expired_before: Timestamp,
    ) -> Self {
        Write::ClaimKey {
            row: KeyRow {
                scope: key.scope.clone(),
                name: key.key.clone(),
                fingerprint: fingerprint.to_owned(),
                answer: None,
                created_at: micros(now),
                lease_until: micros(lease_until),
            },
            expired_before: micros(expired_before),
        }
    }

    /// Sets a workflow's hub session if the stored one is still `expected`.
    pub fn swap_session(
        feature_id: &FeatureId,
        expected: Option<&HubSessionId>,
        new: &HubSessionId,
    ) -> Self {
        Write::SwapSession {
            feature_id: feature_id.clone(),
            expected: expected.map(|s| s.0.clone()),
            new: new.0.clone(),
        }
    }

    /// Notes an overdue stay, with the system's change if the policy makes one.
    pub fn note_overdue(note: &OverdueNote, expiry: Option<Expiry<'_>>) -> Self {
        Write::NoteOverdue(
            OverdueNoteRow::from(note),
            NewEventRow::from(&NewEvent::gate_overdue(note)),
            expiry.map(|e| Commit::new(e.expected_version, e.workflow, e.transition)),
        )
    }

    /// Stores a consultation readers see (`visible`, with `receipt`) or a reservation.
    pub fn add_consultation(
        consultation: &Consultation,
        visible: bool,
        receipt: Option<&Receipt>,
    ) -> Self {
        Write::AddConsultation(
            consultation.feature_id.clone(),
            ConsultationRow::new(consultation, visible),
            visible.then(|| {
                NewEventRow::from(&NewEvent::consultation(
                    EventType::ConsultationCreated,
                    consultation,
                ))
            }),
            receipt.map(ReceiptRow::from),
        )
    }

    /// Stores a changed consultation over an unsettled one (and `receipt`).
    pub fn update_consultation(consultation: &Consultation, receipt: Option<&Receipt>) -> Self {
        Write::UpdateConsultation(
            consultation.feature_id.clone(),
            ConsultationRow::new(consultation, true),
            updated_event(consultation),
            receipt.map(ReceiptRow::from),
        )
    }

    /// Ends the asks made before `asked_before`, failing them with `error` at `at`.
    pub fn interrupt_asks(
        asked_before: Timestamp,
        error: &ConsultationError,
        at: Timestamp,
    ) -> Self {
        Write::InterruptAsks {
            asked_before: micros(asked_before),
            at: micros(at),
            code: error.code.clone(),
            message: error.message.clone(),
        }
    }
}

/// The `consultation.updated` event of `consultation` as it is stored now.
pub fn updated_event(consultation: &Consultation) -> NewEventRow {
    NewEventRow::from(&NewEvent::consultation(
        EventType::ConsultationUpdated,
        consultation,
    ))
}

/// The `consultation.updated` events of the asks an interruption failed: `rows` as read
/// before the update, failed here the same way. A row that does not decode is failed with the
/// others, without its event (logged): one damaged row must not keep every other ask's gate
/// blocked.
pub fn interrupted_events(
    rows: Vec<ConsultationRow>,
    error: (&str, &str),
    at: i64,
) -> Vec<NewEventRow> {
    let error = ConsultationError {
        code: error.0.to_owned(),
        message: error.1.to_owned(),
    };
    let at = chrono::DateTime::from_timestamp_micros(at).unwrap_or_default();
    rows.into_iter()
        .filter_map(|row| {
            let id = row.id.clone();
            match Consultation::try_from(row) {
                Ok(mut ask) => {
                    ask.fail(error.clone(), at);
                    Some(updated_event(&ask))
                }
                Err(corrupt) => {
                    tracing::warn!(consultation_id = %id, error = %corrupt,
                        "an interrupted ask's row does not decode: failed without its event");
                    None
                }
            }
        })
        .collect()
}

/// Most rows one purge transaction deletes: events by id (ids have no gaps, so this bounds
/// them), idempotency keys and settled deliveries by age (a few more where rows share the
/// chunk's last microsecond, see [`chunk_before`]). A backlog (a retention lowered, a webhook
/// that was far behind, a long downtime) is deleted a chunk per transaction, none outlasting
/// PostgreSQL's statement timeout, and SQLite's one writer serves the other writes between
/// chunks.
pub(crate) const PURGE_CHUNK: i64 = 10_000;

/// The bound (exclusive, Unix microseconds) of a chunk of a purge by age, from the age of the
/// [`PURGE_CHUNK`]th oldest row before the cut-off `before` (`queries::keys_chunk_end`,
/// `queries::deliveries_chunk_end`): through that row and any of the same microsecond, or up
/// to the cut-off when fewer are left. Every full chunk deletes at least [`PURGE_CHUNK`] rows,
/// so the next begins later, and none at or after the cut-off.
pub(crate) fn chunk_before(chunk_end: Option<i64>, before: i64) -> i64 {
    chunk_end.map_or(before, |end| end + 1)
}
/// Most chunks one purge deletes; the next purge, a minute later, goes on.
const PURGE_CHUNKS: u32 = 100;

/// The newest event retention deletes, of those after `purged_through`: at most
/// [`PURGE_CHUNK`] of them, up to the one before the oldest made at or after the cut-off in that
/// chunk (`first_kept`), or up to the log's last (`last_id`) when every one is older; never past
/// the lowest webhook mark (`oldest_mark`), so an event outlives the cut-off until every webhook
/// has turned it into its delivery. An event's time is its change's, not its commit's: one
/// committed late with an old time (a slow request, a replica's clock behind) must not take the
/// newer events before it along. `None`: nothing to delete.
pub(crate) fn purge_through(
    first_kept: Option<i64>,
    last_id: i64,
    oldest_mark: Option<i64>,
    purged_through: i64,
) -> Option<i64> {
    let through = first_kept.map_or(last_id, |kept| kept - 1);
    let through = oldest_mark.map_or(through, |mark| through.min(mark));
    let through = through.min(chunk_end(purged_through));
    (through > purged_through).then_some(through)
}

/// Whether a stay's overdue note (the stay due at `due_at`) may be written, judged on its
/// workflow's row as read in the note's transaction (`stay`: its version and `gate_due_at`):
/// not when the stay ended meanwhile (a decision made in time; answered `Count(0)`, nothing
/// noted), nor when the change the note brings (`commit`) was decided at another version (a
/// conflict). `None`: write the note.
pub(crate) fn overdue_refusal(
    due_at: i64,
    stay: Option<(i64, Option<i64>)>,
    commit: Option<&Commit>,
) -> Option<Written> {
    let Some((version, _)) = stay.filter(|(_, due)| *due == Some(due_at)) else {
        return Some(Written::Count(0));
    };
    match commit {
        Some(commit) if commit.expected != version => Some(Written::Refused(conflict(
            &commit.feature_id,
            commit.expected,
            Some(version),
        ))),
        _ => None,
    }
}

/// An expiry refused after its row was found at its version: cannot be, and if it were,
/// nothing of its write may stay. An error that rolls the write back, answered as a bug (500),
/// not as the database being unavailable.
pub(crate) fn expiry_refused() -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        "an expiry was refused at the version it was checked at".into(),
    )
}

/// The last id the chunk after `purged_through` may delete.
pub(crate) fn chunk_end(purged_through: i64) -> i64 {
    purged_through.saturating_add(PURGE_CHUNK)
}

/// A purge (events, idempotency keys or settled deliveries: `purge` makes the write that
/// deletes one chunk of them) through the store's `write`: a chunk per transaction while full
/// chunks come, up to [`PURGE_CHUNKS`]; the count deleted.
pub(crate) async fn purge_in_chunks<Fut>(
    purge: impl Fn() -> Write,
    write: impl Fn(Write) -> Fut,
) -> Result<u64, RepositoryError>
where
    Fut: Future<Output = Result<Written, RepositoryError>>,
{
    delete_in_chunks(PURGE_CHUNKS, purge, write).await
}

/// As [`purge_in_chunks`], up to `chunks` chunks (`u32::MAX`: until none is full).
pub(crate) async fn delete_in_chunks<Fut>(
    chunks: u32,
    purge: impl Fn() -> Write,
    write: impl Fn(Write) -> Fut,
) -> Result<u64, RepositoryError>
where
    Fut: Future<Output = Result<Written, RepositoryError>>,
{
    let mut purged = 0;
    for _ in 0..chunks {
        let n = write(purge()).await?.count();
        purged += n;
        if last_chunk(n) {
            break;
        }
    }
    Ok(purged)
}

/// Whether a chunk that deleted `deleted` rows was the last: it deleted fewer than
/// [`PURGE_CHUNK`].
pub(crate) fn last_chunk(deleted: impl TryInto<i64>) -> bool {
    deleted.try_into().is_ok_and(|n| n < PURGE_CHUNK)
}

impl Written {
    /// The session a swap left stored.
    pub fn into_session(self, feature_id: &FeatureId) -> Result<HubSessionId, RepositoryError> {
        match self {
            Written::Session(stored) => Ok(stored),
            _ => Err(RepositoryError::NotFound(feature_id.clone())),
        }
    }

    /// How many rows the write changed.
    pub fn count(&self) -> u64 {
        match self {
            Written::Count(n) => *n,
            _ => 0,
        }
    }

    /// The deliveries a claim leased.
    pub fn into_due(self) -> Result<Vec<super::webhooks::DueDelivery>, RepositoryError> {
        match self {
            Written::Due(due) => Ok(due),
            other => Err(RepositoryError::Backend(
                format!("a claim answered {other:?}").into(),
            )),
        }
    }

    /// What a key's claim found.
    pub fn into_claim(self) -> Result<KeyClaim, RepositoryError> {
        match self {
            Written::Claim(claim) => Ok(claim),
            other => Err(RepositoryError::Backend(
                format!("a claim answered {other:?}").into(),
            )),
        }
    }

    /// What an advance judged in the store decided: the workflow stored, or why not.
    pub fn into_advanced(self) -> Result<Workflow, orchestrator_core::Error> {
        match self.into_result()? {
            Written::Judged(outcome) => *outcome,
            other => Err(
                RepositoryError::Backend(format!("an advance answered {other:?}").into()).into(),
            ),
        }
    }

    /// The write's outcome as the repository answers it.
    pub fn into_result(self) -> Result<Written, RepositoryError> {
        match self {
            Written::Refused(error) => Err(error),
            other => Ok(other),
        }
    }
}

/// Whether a consultation of workflow `id`, whose stored state is `state` (`None`: no such
/// workflow), may be stored now: only while the workflow is active.
pub fn consultation_refusal(id: &FeatureId, state: Option<&str>) -> Option<RepositoryError> {
    let Some(state) = state else {
        return Some(RepositoryError::NotFound(id.clone()));
    };
    match state.parse::<orchestrator_core::WorkflowState>() {
        Ok(state) if state.is_active() => None,
        Ok(state) => Some(RepositoryError::NotActive {
            feature_id: id.clone(),
            state,
        }),
        Err(e) => Some(RepositoryError::Backend(Box::new(e))),
    }
}

/// Whether `row`, written over a consultation stored as `stored` (its status's text), ends an
/// ask with the hub's answer: kept only while the workflow is active, as a new consultation
/// is. A failure is always kept.
pub fn answers_an_ask(row: &ConsultationRow, stored: Option<&str>) -> bool {
    row.status != enum_text(&ConsultationStatus::Failed)
        && stored == Some(enum_text(&ConsultationStatus::Asking).as_str())
}

/// The refusal of a write whose receipt's claim no longer holds its key (a retry took it over).
pub fn taken_over(receipt: Option<&ReceiptRow>) -> RepositoryError {
    RepositoryError::KeyTakenOver(receipt.map(|r| r.name.clone()).unwrap_or_default())
}

/// The refusal of a compare-and-set that updated nothing: the version moved on (`actual`), or
/// the workflow does not exist.
pub fn conflict(id: &FeatureId, expected: i64, actual: Option<i64>) -> RepositoryError {
    match actual {
        Some(actual) => RepositoryError::VersionConflict {
            expected: u64::try_from(expected).unwrap_or(0),
            actual: u64::try_from(actual).unwrap_or(0),
        },
        None => RepositoryError::NotFound(id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        PURGE_CHUNK, PURGE_CHUNKS, Write, Written, chunk_before, purge_in_chunks, purge_through,
    };
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn retention_stops_at_the_lowest_webhook_mark() {
        assert_eq!(purge_through(None, 0, Some(5), 0), None, "no event");
        assert_eq!(
            purge_through(Some(1), 9, None, 0),
            None,
            "nothing old enough"
        );
        assert_eq!(purge_through(None, 9, None, 0), Some(9), "every event old");
        assert_eq!(purge_through(Some(10), 12, None, 0), Some(9), "no webhook");
        assert_eq!(
            purge_through(Some(10), 12, Some(5), 0),
            Some(5),
            "a webhook behind"
        );
        assert_eq!(
            purge_through(Some(4), 12, Some(5), 0),
            Some(3),
            "every webhook ahead"
        );
        assert_eq!(purge_through(Some(10), 12, None, 9), None, "purged already");
    }

    #[test]
    fn retention_deletes_a_chunk_at_a_time() {
        let last = 3 * PURGE_CHUNK;
        assert_eq!(purge_through(None, last, None, 0), Some(PURGE_CHUNK));
        assert_eq!(
            purge_through(None, last, None, 2 * PURGE_CHUNK),
            Some(3 * PURGE_CHUNK)
        );
        assert_eq!(
            purge_through(Some(2 * PURGE_CHUNK + 7), last, None, 2 * PURGE_CHUNK),
            Some(2 * PURGE_CHUNK + 6)
        );
        assert_eq!(
            purge_through(None, i64::MAX, None, i64::MAX - 1),
            Some(i64::MAX)
        );
    }

    #[test]
    fn a_chunk_by_age_ends_after_its_last_rows_microsecond_or_at_the_cut_off() {
        assert_eq!(chunk_before(Some(10), 50), 11);
        assert_eq!(chunk_before(None, 50), 50);
    }

    #[tokio::test]
    async fn a_purge_goes_on_while_chunks_come_full_up_to_its_bound() {
        let full = PURGE_CHUNK.unsigned_abs();
        let calls = AtomicU32::new(0);
        let purged = purge_in_chunks(
            || Write::PurgeEvents(7),
            |write| {
                assert!(matches!(write, Write::PurgeEvents(7)));
                let call = calls.fetch_add(1, Ordering::Relaxed);
                async move { Ok(Written::Count(if call < 2 { full } else { 5 })) }
            },
        )
        .await
        .unwrap();
        assert_eq!((purged, calls.load(Ordering::Relaxed)), (2 * full + 5, 3));

        let calls = AtomicU32::new(0);
        let purged = purge_in_chunks(
            || Write::PurgeKeys(7),
            |_| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move { Ok(Written::Count(full)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), PURGE_CHUNKS);
        assert_eq!(purged, u64::from(PURGE_CHUNKS) * full);
    }
}
