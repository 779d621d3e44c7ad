//! The SQLite side of every query and write: each query built by `queries`, run blocking.
//! A write runs inside the transaction its caller (the writer thread) opened.

use diesel::prelude::*;
use diesel::query_dsl::positional_order_dsl::PositionalOrderDsl;
use diesel::result::QueryResult;
use orchestrator_core::consultation::ConsultationStatus;
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{FeatureId, Judge, KeyClaim, RepositoryError, WorkflowState};

use super::prepared;
use crate::storage::models;
use crate::storage::models::{
    ConsultationRow, EventRead, EventRow, KeyRow, NewEventRow, ReceiptRow, SizedPage,
    TransitionRow, Window, WorkflowRow, enum_text, event_types, states,
};
use crate::storage::queries;
use crate::storage::schema::{
    consultations, event_log, events, gate_overdue_notes, idempotency_keys, storage_probe,
    transitions, workflows,
};
use crate::storage::write::{
    ClaimStep, Commit, Verdict, Write, Written, answers_an_ask, chunk_before, chunk_end, conflict,
    consultation_refusal, expiry_refused, interrupted_events, judge_advance, judge_claim,
    overdue_refusal, purge_through, taken_over,
};

/// One workflow's row.
pub fn get(conn: &mut SqliteConnection, feature_id: &str) -> QueryResult<Option<WorkflowRow>> {
    queries::workflow(feature_id)
        .select(WorkflowRow::as_select())
        .get_result(conn)
        .optional()
}

/// Up to `limit` rows in feature-id order after `after`, in `state`.
pub fn page(
    conn: &mut SqliteConnection,
    state: Option<WorkflowState>,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    queries::page(states(state), after, limit)
        .select(WorkflowRow::as_select())
        .load(conn)
}

/// Up to `limit` rows at the gate, the earliest due first, then those without a deadline.
pub fn gates_by_due(conn: &mut SqliteConnection, limit: i64) -> QueryResult<Vec<WorkflowRow>> {
    let mut rows = queries::gates_due_first(limit)
        .select(WorkflowRow::as_select())
        .load(conn)?;
    let left = limit.saturating_sub(i64::try_from(rows.len()).unwrap_or(limit));
    if left > 0 {
        rows.extend(
            queries::gates_without_deadline(WorkflowState::Gate1.as_str(), left)
                .select(WorkflowRow::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// Up to `limit` overdue rows in feature-id order after `after`.
pub fn overdue_page(
    conn: &mut SqliteConnection,
    now: i64,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    queries::overdue_page(now, after, limit)
        .select(WorkflowRow::as_select())
        .load(conn)
}

/// How many stays at the gate were due before `now`.
pub fn overdue_count(conn: &mut SqliteConnection, now: i64) -> QueryResult<i64> {
    queries::overdue_count(now).get_result(conn)
}

/// Up to `limit` overdue rows not noted yet, the longest overdue first.
pub fn unnoted_overdue(
    conn: &mut SqliteConnection,
    now: i64,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    queries::unnoted_overdue(now, limit)
        .select(WorkflowRow::as_select())
        .load(conn)
}

/// `(state, count)` for every state that has workflows.
pub fn state_counts(conn: &mut SqliteConnection) -> QueryResult<Vec<(String, i64)>> {
    queries::state_counts().load(conn)
}

/// A workflow's history rows, oldest first.
pub fn history(conn: &mut SqliteConnection, feature_id: &str) -> QueryResult<Vec<TransitionRow>> {
    queries::history(feature_id)
        .select(TransitionRow::as_select())
        .load(conn)
}

/// A workflow's hub session (`None`: no such workflow).
pub fn hub_session(
    conn: &mut SqliteConnection,
    feature_id: &str,
) -> QueryResult<Option<Option<String>>> {
    queries::hub_session(feature_id).get_result(conn).optional()
}

/// A workflow's consultation rows, oldest first.
pub fn consultations(
    conn: &mut SqliteConnection,
    feature_id: &str,
) -> QueryResult<Vec<ConsultationRow>> {
    queries::consultations_of(feature_id)
        .select(ConsultationRow::as_select())
        .load(conn)
}

/// These workflows' published consultations that block their gates (a reservation holds
/// nothing), oldest first.
pub fn gate_blockers(
    conn: &mut SqliteConnection,
    feature_ids: Vec<&str>,
) -> QueryResult<Vec<ConsultationRow>> {
    let asking = enum_text(&ConsultationStatus::Asking);
    let pending = enum_text(&ConsultationStatus::PendingHuman);
    queries::gate_blockers_of(feature_ids, &asking, &pending)
        .select(ConsultationRow::as_select())
        .load(conn)
}

/// Up to `limit` events after `after` passing `filter`, then the log's bounds.
pub fn events(
    conn: &mut SqliteConnection,
    after: i64,
    filter: &orchestrator_core::EventFilter,
    limit: i64,
) -> QueryResult<EventRead> {
    let types = event_types(filter);
    // Column 1 is `events.id`, `EventRow`'s first field: the merged page's order.
    let columns = || (EventRow::as_select(), Option::<TransitionRow>::as_select());
    // The ids a bounded read looked at.
    let mut window = None;
    if filter.feature_id.is_none() && models::bounded(filter) {
        let first = queries::first_event_after(after)
            .first::<i64>(conn)
            .optional()?;
        let newest = match first {
            Some(first) => queries::last_event_within(after, Window::last_from(first))
                .first::<i64>(conn)
                .optional()?,
            None => None,
        };
        window = Some(Window::new(after, first, newest));
    }
    let mut page = SizedPage::new(after, limit);
    while let Some((after, rows)) = page.ask() {
        let found = match &filter.feature_id {
            Some(id) => queries::own_events_of(id.as_str(), after, types.clone())
                .select(columns())
                .union_all(
                    queries::entry_events_of(id.as_str(), after, types.clone()).select(columns()),
                )
                .positional_order_by(1)
                .limit(rows)
                .load(conn)?,
            None => queries::events_after(after, Window::end(window), types.clone(), rows)
                .select(columns())
                .load(conn)?,
        };
        page.take(found, rows);
    }
    let bounds = queries::event_bounds().get_result(conn)?;
    Ok(EventRead::new(page, window, limit, bounds))
}

/// A trivial query: does the database answer?
pub fn ping(conn: &mut SqliteConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
}

/// Why a consultation of workflow `id` may not be stored now (it is not active, or does not
/// exist), if so.
fn not_active(conn: &mut SqliteConnection, id: &FeatureId) -> QueryResult<Option<RepositoryError>> {
    let state: Option<String> = queries::state(id.as_str()).get_result(conn).optional()?;
    Ok(consultation_refusal(id, state.as_deref()))
}

/// Carries out one write on `conn`, inside the caller's transaction.
pub fn apply(
    conn: &mut SqliteConnection,
    ids: &mut EventIds,
    write: &Write,
) -> QueryResult<Written> {
    match write {
        Write::Create(id, row, first, event, receipt) => {
            if let Some(refusal) = key_refusal(conn, receipt.as_ref())? {
                return Ok(Written::Refused(refusal));
            }
            let inserted = diesel::insert_into(workflows::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute(conn)?;
            if inserted == 0 {
                return Ok(Written::Refused(RepositoryError::AlreadyExists(id.clone())));
            }
            answer_key(conn, receipt.as_ref())?;
            record_entry(conn, ids, first, event)?;
            Ok(Written::Done)
        }
        Write::Commit(commit) => apply_commit(conn, ids, commit),
        Write::SwapSession {
            feature_id,
            expected,
            new,
        } => {
            prepared::update(
                queries::swappable_session(
                    feature_id.as_str(),
                    expected.as_deref().unwrap_or_default(),
                ),
                workflows::hub_session_id.eq(new),
            )
            .execute(conn)?;
            Ok(match hub_session(conn, feature_id.as_str())? {
                Some(Some(stored)) => Written::Session(HubSessionId(stored)),
                _ => Written::Refused(RepositoryError::NotFound(feature_id.clone())),
            })
        }
        Write::AddConsultation(id, row, event, receipt) => {
            if let Some(refusal) = key_refusal(conn, receipt.as_ref())? {
                return Ok(Written::Refused(refusal));
            }
            // Judged here, in the transaction that stores it: a cancel that landed first wins.
            if let Some(refusal) = not_active(conn, id)? {
                return Ok(Written::Refused(refusal));
            }
            // Publishing a reservation replaces it.
            diesel::insert_into(consultations::table)
                .values(row)
                .on_conflict(consultations::id)
                .do_update()
                .set(row)
                .execute(conn)?;
            answer_key(conn, receipt.as_ref())?;
            append_events(conn, ids, event.as_slice())?;
            Ok(Written::Done)
        }
        Write::UpdateConsultation(id, row, event, receipt) => {
            if let Some(refusal) = key_refusal(conn, receipt.as_ref())? {
                return Ok(Written::Refused(refusal));
            }
            // Judged here, in the transaction that stores it: a cancel that landed while the
            // hub was asked (or the work's end) wins over its answer.
            let stored: Option<String> = queries::consultation_status(&row.id)
                .get_result(conn)
                .optional()?;
            if answers_an_ask(row, stored.as_deref())
                && let Some(refusal) = not_active(conn, id)?
            {
                return Ok(Written::Refused(refusal));
            }
            let asking = enum_text(&ConsultationStatus::Asking);
            let pending = enum_text(&ConsultationStatus::PendingHuman);
            let updated = prepared::update(
                queries::unsettled_consultation(&row.id, &asking, &pending),
                row,
            )
            .execute(conn)?;
            answer_key(conn, receipt.as_ref())?;
            if updated == 1 {
                append_events(conn, ids, std::slice::from_ref(event))?;
            }
            Ok(Written::Done)
        }
        Write::DropReservation(id) => {
            diesel::delete(queries::reservation(id)).execute(conn)?;
            Ok(Written::Done)
        }
        Write::InterruptAsks {
            asked_before,
            at,
            code,
            message,
        } => {
            diesel::delete(queries::reservations_before(*asked_before)).execute(conn)?;
            let failed = enum_text(&ConsultationStatus::Failed);
            let asks = queries::asks_before(*asked_before)
                .select(ConsultationRow::as_select())
                .load(conn)?;
            let events = interrupted_events(asks, (code, message), *at);
            let n = prepared::update(
                queries::asks_before(*asked_before),
                (
                    consultations::status.eq(failed),
                    consultations::error_code.eq(code),
                    consultations::error_message.eq(message),
                    consultations::updated_at.eq(at),
                ),
            )
            .execute(conn)?;
            append_events(conn, ids, &events)?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::NoteOverdue(note, event, commit) => {
            // The stay as it is now (this thread is the only writer): still at the gate with
            // this deadline, and at the version the change was decided on.
            let stay = queries::stay_of(&note.feature_id)
                .get_result(conn)
                .optional()?;
            if let Some(refused) = overdue_refusal(note.due_at, stay, commit.as_ref()) {
                return Ok(refused);
            }
            let noted = diesel::insert_into(gate_overdue_notes::table)
                .values(note)
                .on_conflict_do_nothing()
                .execute(conn)?;
            if noted == 0 {
                return Ok(Written::Count(0));
            }
            // The note's event first, then the change it brings.
            append_events(conn, ids, std::slice::from_ref(event))?;
            if let Some(commit) = commit
                && let Written::Refused(_) = apply_commit(conn, ids, commit)?
            {
                return Err(expiry_refused());
            }
            Ok(Written::Count(1))
        }
        Write::ClaimKey {
            row,
            expired_before,
        } => claim_key(conn, row, *expired_before).map(Written::Claim),
        // The update is its own check: one statement, nothing else to write.
        Write::AnswerKey(receipt) => Ok(match answer_key(conn, Some(receipt))? {
            true => Written::Done,
            false => Written::Refused(taken_over(Some(receipt))),
        }),
        Write::ReleaseKey(scope, name, lease_until) => {
            diesel::delete(queries::held_key(scope, name, *lease_until)).execute(conn)?;
            Ok(Written::Done)
        }
        Write::ForgetUnansweredKeys => {
            let n = diesel::delete(queries::unanswered_keys()).execute(conn)?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::PurgeKeys(before) => {
            let end: Option<i64> = queries::keys_chunk_end(*before)
                .get_result(conn)
                .optional()?;
            let through = chunk_before(end, *before);
            let n = diesel::delete(queries::keys_before(through)).execute(conn)?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::PurgeEvents(before) => {
            let (last, purged): (i64, i64) = queries::event_bounds().get_result(conn)?;
            let first_kept: Option<i64> = queries::first_kept(*before, purged, chunk_end(purged))
                .get_result(conn)
                .optional()?;
            let oldest_mark = queries::oldest_webhook_mark().get_result(conn)?;
            let Some(through) = purge_through(first_kept, last, oldest_mark, purged) else {
                return Ok(Written::Count(0));
            };
            let n = diesel::delete(queries::events_through(through)).execute(conn)?;
            prepared::update(
                event_log::table
                    .find(1)
                    .filter(event_log::purged_through.lt(through)),
                event_log::purged_through.eq(through),
            )
            .execute(conn)?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::Import(rows, history) => {
            // One row per statement: SQLite cannot take these rows in one.
            for row in rows {
                diesel::insert_into(workflows::table)
                    .values(row)
                    .execute(conn)?;
            }
            for row in history {
                diesel::insert_into(transitions::table)
                    .values(row)
                    .execute(conn)?;
            }
            Ok(Written::Done)
        }
        Write::Probe(at) => {
            diesel::insert_into(storage_probe::table)
                .values(queries::probe_row(*at))
                .on_conflict(storage_probe::id)
                .do_update()
                .set(storage_probe::at.eq(at))
                .execute(conn)?;
            Ok(Written::Done)
        }
        Write::Webhook(write) => super::webhooks::apply(conn, ids, write),
        Write::BoardSession(write) => super::sessions::apply(conn, write),
    }
}

/// Reads `feature_id`'s workflow inside the caller's transaction, lets `judge` decide its
/// change, and stores it as a commit does: `Judged` with the snapshot stored or the judge's
/// refusal (then nothing is written).
pub fn advance(
    conn: &mut SqliteConnection,
    ids: &mut EventIds,
    feature_id: &FeatureId,
    judge: &Judge,
) -> QueryResult<Written> {
    let row = get(conn, feature_id.as_str())?;
    let (commit, next) = match judge_advance(feature_id, row, judge) {
        Verdict::Commit(commit, next) => (commit, next),
        Verdict::Answer(written) => return Ok(written),
    };
    Ok(match apply_commit(conn, ids, &commit)? {
        Written::Done => Written::Judged(Box::new(Ok(next))),
        // Not expected: the version was read in this transaction.
        other => other,
    })
}

/// The compare-and-set: only the writer that still sees `expected` wins.
fn apply_commit(
    conn: &mut SqliteConnection,
    ids: &mut EventIds,
    commit: &Commit,
) -> QueryResult<Written> {
    let id = commit.feature_id.as_str();
    if let Some(refusal) = key_refusal(conn, commit.receipt.as_ref())? {
        return Ok(Written::Refused(refusal));
    }
    // Judged on facts read before this write: a consultation stored since (every write goes
    // through this one thread, so it is in this database already) refuses it.
    if commit.gated && !gate_blockers(conn, vec![id])?.is_empty() {
        return Ok(Written::Refused(RepositoryError::GateBlocked(
            commit.feature_id.clone(),
        )));
    }
    let updated =
        prepared::update_same_text(queries::at_version(id, commit.expected), &commit.changes)
            .execute(conn)?;
    if updated == 0 {
        let actual = queries::version(id).get_result(conn).optional()?;
        return Ok(Written::Refused(conflict(
            &commit.feature_id,
            commit.expected,
            actual,
        )));
    }
    answer_key(conn, commit.receipt.as_ref())?;
    record_entry(conn, ids, &commit.history, &commit.event)?;
    Ok(Written::Done)
}

/// Stores a history entry and its `workflow.transitioned` event, numbered with the next id,
/// which the entry names (the workflow's events are found through its entries).
fn record_entry(
    conn: &mut SqliteConnection,
    ids: &mut EventIds,
    entry: &TransitionRow,
    event: &NewEventRow,
) -> QueryResult<()> {
    diesel::insert_into(transitions::table)
        .values((entry, transitions::event_id.eq(ids.next)))
        .execute(conn)?;
    append_events(conn, ids, std::slice::from_ref(event))
}

/// The event ids a transaction hands out: the log's last id is read once when the transaction
/// begins and written back once before it commits. Only the writer thread writes, one
/// transaction at a time, so ids are taken and committed in order.
#[derive(Debug, Clone, Copy)]
pub struct EventIds {
    /// The next id to hand out.
    next: i64,
    /// `next` when the transaction began.
    first: i64,
}

impl EventIds {
    /// Reads the log's last id, inside the caller's transaction.
    pub fn read(conn: &mut SqliteConnection) -> QueryResult<Self> {
        let (last, _purged): (i64, i64) = queries::event_bounds().get_result(conn)?;
        Ok(EventIds {
            next: last + 1,
            first: last + 1,
        })
    }

    /// The last id handed out (the log's last id, as this transaction sees it).
    pub fn last(&self) -> i64 {
        self.next - 1
    }

    /// Stores the last id handed out, if any was; the transaction's last write.
    pub fn save(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        if self.next != self.first {
            prepared::update(
                event_log::table.find(1),
                event_log::last_id.eq(self.next - 1),
            )
            .execute(conn)?;
        }
        Ok(())
    }
}

/// Numbers `new` with the next ids and stores them.
fn append_events(
    conn: &mut SqliteConnection,
    ids: &mut EventIds,
    new: &[NewEventRow],
) -> QueryResult<()> {
    for event in new {
        diesel::insert_into(events::table)
            .values(event.numbered(ids.next))
            .execute(conn)?;
        ids.next += 1;
    }
    Ok(())
}

/// `KeyTakenOver` unless `receipt`'s claim still holds its key. A write that stores a receipt
/// asks first, before it changes anything; this thread is the database's only writer, so no
/// claim takes the key over between the question and [`answer_key`].
pub(super) fn key_refusal(
    conn: &mut SqliteConnection,
    receipt: Option<&ReceiptRow>,
) -> QueryResult<Option<RepositoryError>> {
    let Some(receipt) = receipt else {
        return Ok(None);
    };
    let held = queries::held_key(&receipt.scope, &receipt.name, receipt.lease_until)
        .select(idempotency_keys::lease_until)
        .get_result::<i64>(conn)
        .optional()?
        .is_some();
    Ok((!held).then(|| taken_over(Some(receipt))))
}

/// Stores the answer of a key still held by the receipt's claim ([`key_refusal`] found it
/// held); whether it was (no receipt: nothing to store).
pub(super) fn answer_key(
    conn: &mut SqliteConnection,
    receipt: Option<&ReceiptRow>,
) -> QueryResult<bool> {
    let Some(receipt) = receipt else {
        return Ok(true);
    };
    prepared::update(
        queries::held_key(&receipt.scope, &receipt.name, receipt.lease_until),
        idempotency_keys::answer.eq(&receipt.answer),
    )
    .execute(conn)
    .map(|n| n == 1)
}

/// Claims a key: new, expired, or unanswered past its lease; else says why not.
fn claim_key(
    conn: &mut SqliteConnection,
    row: &KeyRow,
    expired_before: i64,
) -> QueryResult<KeyClaim> {
    let (scope, name) = (row.scope.as_str(), row.name.as_str());
    let inserted = diesel::insert_into(idempotency_keys::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)?;
    let renewed = inserted == 0
        && prepared::update(
            queries::expired_key(scope, name, expired_before, row.created_at),
            row,
        )
        .execute(conn)?
            == 1;
    if inserted == 1 || renewed {
        return Ok(KeyClaim::Claimed);
    }
    let stored = queries::key_claim_state(scope, name).get_result(conn)?;
    Ok(
        match judge_claim(stored, &row.fingerprint, row.created_at) {
            ClaimStep::Decided(claim) => claim,
            ClaimStep::TakeOver => {
                let taken = prepared::update(
                    queries::abandoned_key(scope, name, &row.fingerprint, row.created_at),
                    idempotency_keys::lease_until.eq(row.lease_until),
                )
                .execute(conn)?;
                if taken == 1 {
                    KeyClaim::Claimed
                } else {
                    KeyClaim::InUse
                }
            }
        },
    )
}
