//! The PostgreSQL side of every query and write: each query built by `queries`, run async.
//! A write runs inside the transaction its caller opened. An advance's compare-and-set and a
//! new workflow go through `commits` instead, which runs many at once.

use diesel::pg::Pg;
use diesel::prelude::{
    CombineDsl, ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
};
use diesel::query_builder::AstPass;
use diesel::query_dsl::positional_order_dsl::PositionalOrderDsl;
use diesel::result::QueryResult;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orchestrator_core::consultation::ConsultationStatus;
use orchestrator_core::hub::HubSessionId;
use orchestrator_core::{FeatureId, KeyClaim, RepositoryError, WorkflowState};

use super::{Prepared, Statement, bind_array};
use crate::storage::models;
use crate::storage::models::{
    ConsultationRow, EventRead, EventRow, KeyRow, NewEventRow, ReceiptRow, SizedPage,
    TransitionRow, Window, WorkflowRow, enum_text, event_types, states,
};
use crate::storage::queries;
use crate::storage::schema::{
    consultations, event_log, gate_overdue_notes, idempotency_keys, storage_probe, transitions,
    workflows,
};
use crate::storage::write::{
    ClaimStep, Write, Written, answers_an_ask, chunk_before, chunk_end, consultation_refusal,
    expiry_refused, interrupted_events, judge_claim, overdue_refusal, purge_through, taken_over,
};

/// Rows an import inserts per statement (of 14 columns at most, well under PostgreSQL's
/// 65 535 parameters a statement).
const IMPORT_ROWS: usize = 1000;

/// One workflow's row.
pub async fn get(
    conn: &mut AsyncPgConnection,
    feature_id: &str,
) -> QueryResult<Option<WorkflowRow>> {
    queries::workflow(feature_id)
        .select(WorkflowRow::as_select())
        .get_result(conn)
        .await
        .optional()
}

/// Up to `limit` rows in feature-id order after `after`, in `state`.
pub async fn page(
    conn: &mut AsyncPgConnection,
    state: Option<WorkflowState>,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    queries::page(states(state), after, limit)
        .select(WorkflowRow::as_select())
        .load(conn)
        .await
}

/// Up to `limit` rows at the gate, the earliest due first, then those without a deadline.
pub async fn gates_by_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    let mut rows = queries::gates_due_first(limit)
        .select(WorkflowRow::as_select())
        .load(conn)
        .await?;
    let left = limit.saturating_sub(i64::try_from(rows.len()).unwrap_or(limit));
    if left > 0 {
        rows.extend(
            queries::gates_without_deadline(WorkflowState::Gate1.as_str(), left)
                .select(WorkflowRow::as_select())
                .load(conn)
                .await?,
        );
    }
    Ok(rows)
}

/// Up to `limit` overdue rows in feature-id order after `after`.
pub async fn overdue_page(
    conn: &mut AsyncPgConnection,
    now: i64,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    queries::overdue_page(now, after, limit)
        .select(WorkflowRow::as_select())
        .load(conn)
        .await
}

/// How many stays at the gate were due before `now`.
pub async fn overdue_count(conn: &mut AsyncPgConnection, now: i64) -> QueryResult<i64> {
    queries::overdue_count(now).get_result(conn).await
}

/// How long a gate's deadline note waits for its workflow's row (set for the transaction,
/// then back to the session's default once the row is locked).
const NOTE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";
const DEFAULT_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout TO DEFAULT";

/// Up to `limit` overdue rows not noted yet, the longest overdue first.
pub async fn unnoted_overdue(
    conn: &mut AsyncPgConnection,
    now: i64,
    limit: i64,
) -> QueryResult<Vec<WorkflowRow>> {
    queries::unnoted_overdue(now, limit)
        .select(WorkflowRow::as_select())
        .load(conn)
        .await
}

/// `(state, count)` for every state that has workflows.
pub async fn state_counts(conn: &mut AsyncPgConnection) -> QueryResult<Vec<(String, i64)>> {
    queries::state_counts().load(conn).await
}

/// A workflow's history rows, oldest first.
pub async fn history(
    conn: &mut AsyncPgConnection,
    feature_id: &str,
) -> QueryResult<Vec<TransitionRow>> {
    queries::history(feature_id)
        .select(TransitionRow::as_select())
        .load(conn)
        .await
}

/// A workflow's hub session (`None`: no such workflow).
pub async fn hub_session(
    conn: &mut AsyncPgConnection,
    feature_id: &str,
) -> QueryResult<Option<Option<String>>> {
    queries::hub_session(feature_id)
        .get_result(conn)
        .await
        .optional()
}

/// A workflow's consultation rows, oldest first.
pub async fn consultations(
    conn: &mut AsyncPgConnection,
    feature_id: &str,
) -> QueryResult<Vec<ConsultationRow>> {
    queries::consultations_of(feature_id)
        .select(ConsultationRow::as_select())
        .load(conn)
        .await
}

/// These workflows' published consultations that block their gates (a reservation holds
/// nothing), oldest first.
pub async fn gate_blockers(
    conn: &mut AsyncPgConnection,
    feature_ids: Vec<&str>,
) -> QueryResult<Vec<ConsultationRow>> {
    let asking = enum_text(&ConsultationStatus::Asking);
    let pending = enum_text(&ConsultationStatus::PendingHuman);
    queries::gate_blockers_of(feature_ids, &asking, &pending)
        .select(ConsultationRow::as_select())
        .load(conn)
        .await
}

/// Up to `limit` events after `after` passing `filter`, then the log's bounds (read after the
/// rows, in a later snapshot, so a purge that raced the read shows).
pub async fn events(
    conn: &mut AsyncPgConnection,
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
            .await
            .optional()?;
        let newest = match first {
            Some(first) => queries::last_event_within(after, Window::last_from(first))
                .first::<i64>(conn)
                .await
                .optional()?,
            None => None,
        };
        window = Some(Window::new(after, first, newest));
    }
    let mut page = SizedPage::new(after, limit);
    while let Some((after, rows)) = page.ask() {
        let found = match &filter.feature_id {
            Some(id) => {
                queries::own_events_of(id.as_str(), after, types.clone())
                    .select(columns())
                    .union_all(
                        queries::entry_events_of(id.as_str(), after, types.clone())
                            .select(columns()),
                    )
                    .positional_order_by(1)
                    .limit(rows)
                    .load(conn)
                    .await?
            }
            None => {
                queries::events_after(after, Window::end(window), types.clone(), rows)
                    .select(columns())
                    .load(conn)
                    .await?
            }
        };
        page.take(found, rows);
    }
    let bounds = queries::event_bounds().get_result(conn).await?;
    Ok(EventRead::new(page, window, limit, bounds))
}

/// Whether the database answers, and has the function that writes of events need.
pub async fn ping(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    // The function every write of events calls, looked up (not called: that would take the
    // event log's lock): a restore of the tables alone, without it, fails each such write,
    // and `/health` says so instead of staying green.
    diesel::sql_query("SELECT 'take_event_ids(bigint)'::regprocedure::text")
        .execute(conn)
        .await
        .map(|_| ())
}

/// Why a consultation of workflow `id` may not be stored now (it is not active, or does not
/// exist), if so. FOR SHARE: a cancel committing meanwhile waits for this transaction, or this
/// one for it, and then reads the new state.
async fn not_active(
    conn: &mut AsyncPgConnection,
    id: &FeatureId,
) -> QueryResult<Option<RepositoryError>> {
    let state: Option<String> = queries::state(id.as_str())
        .for_share()
        .get_result(conn)
        .await
        .optional()?;
    Ok(consultation_refusal(id, state.as_deref()))
}

/// Carries out one write on `conn`, inside the caller's transaction. Commits and creations
/// are `commits`' business: here they are refused.
pub async fn apply(conn: &mut AsyncPgConnection, write: &Write) -> QueryResult<Written> {
    match write {
        Write::Webhook(write) => super::webhooks::apply(conn, write).await,
        Write::BoardSession(write) => super::sessions::apply(conn, write).await,
        // `PgRepository::write` sends both to the commit queue, whose batches share a
        // statement and a commit; neither is carried out in a transaction of its own.
        Write::Create(..) | Write::Commit(_) => Ok(Written::Refused(RepositoryError::Backend(
            "new workflows and advances are written by the commit queue".into(),
        ))),
        Write::SwapSession {
            feature_id,
            expected,
            new,
        } => {
            diesel::update(queries::swappable_session(
                feature_id.as_str(),
                expected.as_deref().unwrap_or_default(),
            ))
            .set(workflows::hub_session_id.eq(new))
            .execute(conn)
            .await?;
            Ok(match hub_session(conn, feature_id.as_str()).await? {
                Some(Some(stored)) => Written::Session(HubSessionId(stored)),
                _ => Written::Refused(RepositoryError::NotFound(feature_id.clone())),
            })
        }
        Write::AddConsultation(id, row, event, receipt) => {
            if let Some(refusal) = key_refusal(conn, receipt.as_ref()).await? {
                return Ok(Written::Refused(refusal));
            }
            // Judged here, in the transaction that stores it: a cancel that landed first wins.
            if let Some(refusal) = not_active(conn, id).await? {
                return Ok(Written::Refused(refusal));
            }
            // Publishing a reservation replaces it.
            diesel::insert_into(consultations::table)
                .values(row)
                .on_conflict(consultations::id)
                .do_update()
                .set(row)
                .execute(conn)
                .await?;
            if let Some(receipt) = receipt {
                answer_key(conn, receipt).await?;
            }
            append_events(conn, event.as_slice()).await?;
            Ok(Written::Done)
        }
        Write::UpdateConsultation(id, row, event, receipt) => {
            if let Some(refusal) = key_refusal(conn, receipt.as_ref()).await? {
                return Ok(Written::Refused(refusal));
            }
            // Judged here, in the transaction that stores it: a cancel that landed while the
            // hub was asked (or the work's end) wins over its answer.
            let stored: Option<String> = queries::consultation_status(&row.id)
                .get_result(conn)
                .await
                .optional()?;
            if answers_an_ask(row, stored.as_deref())
                && let Some(refusal) = not_active(conn, id).await?
            {
                return Ok(Written::Refused(refusal));
            }
            let asking = enum_text(&ConsultationStatus::Asking);
            let pending = enum_text(&ConsultationStatus::PendingHuman);
            let updated =
                diesel::update(queries::unsettled_consultation(&row.id, &asking, &pending))
                    .set(row)
                    .execute(conn)
                    .await?;
            if let Some(receipt) = receipt {
                answer_key(conn, receipt).await?;
            }
            if updated == 1 {
                append_events(conn, std::slice::from_ref(event)).await?;
            }
            Ok(Written::Done)
        }
        Write::DropReservation(id) => {
            diesel::delete(queries::reservation(id))
                .execute(conn)
                .await?;
            Ok(Written::Done)
        }
        Write::InterruptAsks {
            asked_before,
            at,
            code,
            message,
        } => {
            diesel::delete(queries::reservations_before(*asked_before))
                .execute(conn)
                .await?;
            let failed = enum_text(&ConsultationStatus::Failed);
            let asks = queries::asks_before(*asked_before)
                .select(ConsultationRow::as_select())
                .for_update()
                .load(conn)
                .await?;
            // Only the rows locked above, each with its event: an ask published meanwhile (its
            // commit after this statement's snapshot, before the update's) is left to the next
            // sweep rather than failed without one.
            let ids: Vec<String> = asks.iter().map(|ask| ask.id.clone()).collect();
            let events = interrupted_events(asks, (code, message), *at);
            let n = diesel::update(
                queries::asks_before(*asked_before).filter(consultations::id.eq_any(&ids)),
            )
            .set((
                consultations::status.eq(failed),
                consultations::error_code.eq(code),
                consultations::error_message.eq(message),
                consultations::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
            append_events(conn, &events).await?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::NoteOverdue(note, event, commit) => {
            // The stay as it is now, its row locked first (before the note's foreign key and
            // the event log: the order every write keeps): still at the gate with this
            // deadline, and at the version the change was decided on. A row held longer than
            // a commit holds one (a stuck transaction) is given up on after a second, not the
            // statement's five: the deadline sweep goes on to the other gates. (The event
            // log's lock, after it, is waited for as every write waits for it.)
            diesel::sql_query(NOTE_LOCK_TIMEOUT).execute(conn).await?;
            let stay = queries::stay_of(&note.feature_id)
                .for_update()
                .get_result(conn)
                .await
                .optional()?;
            diesel::sql_query(DEFAULT_LOCK_TIMEOUT)
                .execute(conn)
                .await?;
            if let Some(refused) = overdue_refusal(note.due_at, stay, commit.as_ref()) {
                return Ok(refused);
            }
            // A second server's insert waits for the row lock above, then finds the note.
            let noted = diesel::insert_into(gate_overdue_notes::table)
                .values(note)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if noted == 0 {
                return Ok(Written::Count(0));
            }
            // The note's event first, then the change it brings (an expiry is rare: the one
            // write that holds the event log's lock across a second statement).
            append_events(conn, std::slice::from_ref(event)).await?;
            if let Some(commit) = commit {
                // The row is this transaction's (locked above).
                if let Written::Refused(_) = super::commits::apply_locked(conn, commit).await? {
                    return Err(expiry_refused());
                }
            }
            Ok(Written::Count(1))
        }
        Write::ClaimKey {
            row,
            expired_before,
        } => claim_key(conn, row, *expired_before)
            .await
            .map(Written::Claim),
        // The update is its own check: one statement, nothing else to write.
        Write::AnswerKey(receipt) => Ok(match answer_key(conn, receipt).await? {
            true => Written::Done,
            false => Written::Refused(taken_over(Some(receipt))),
        }),
        Write::ReleaseKey(scope, name, lease_until) => {
            diesel::delete(queries::held_key(scope, name, *lease_until))
                .execute(conn)
                .await?;
            Ok(Written::Done)
        }
        Write::ForgetUnansweredKeys => {
            let n = diesel::delete(queries::unanswered_keys())
                .execute(conn)
                .await?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::PurgeKeys(before) => {
            let end: Option<i64> = queries::keys_chunk_end(*before)
                .get_result(conn)
                .await
                .optional()?;
            let through = chunk_before(end, *before);
            let n = diesel::delete(queries::keys_before(through))
                .execute(conn)
                .await?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::PurgeEvents(before) => {
            let (last, purged): (i64, i64) = queries::event_bounds().get_result(conn).await?;
            let first_kept: Option<i64> = queries::first_kept(*before, purged, chunk_end(purged))
                .get_result(conn)
                .await
                .optional()?;
            let oldest_mark = queries::oldest_webhook_mark().get_result(conn).await?;
            let Some(through) = purge_through(first_kept, last, oldest_mark, purged) else {
                return Ok(Written::Count(0));
            };
            let n = diesel::delete(queries::events_through(through))
                .execute(conn)
                .await?;
            diesel::update(event_log::table.find(1))
                .set(event_log::purged_through.eq(through))
                .filter(event_log::purged_through.lt(through))
                .execute(conn)
                .await?;
            Ok(Written::Count(u64::try_from(n).unwrap_or(0)))
        }
        Write::Import(rows, history) => {
            // In statements of IMPORT_ROWS rows: one statement carries at most 65 535
            // parameters. The caller's transaction keeps the import all or nothing.
            for rows in rows.chunks(IMPORT_ROWS) {
                diesel::insert_into(workflows::table)
                    .values(rows)
                    .execute(conn)
                    .await?;
            }
            for history in history.chunks(IMPORT_ROWS) {
                diesel::insert_into(transitions::table)
                    .values(history)
                    .execute(conn)
                    .await?;
            }
            Ok(Written::Done)
        }
        Write::Probe(at) => {
            diesel::insert_into(storage_probe::table)
                .values(queries::probe_row(*at))
                .on_conflict(storage_probe::id)
                .do_update()
                .set(storage_probe::at.eq(at))
                .execute(conn)
                .await?;
            Ok(Written::Done)
        }
    }
}

/// Numbers `new` after the log's last id and stores them, in one statement. Its update of the
/// one `event_log` row (through `take_event_ids`, whose lock wait re-checks only itself, not
/// the whole statement; ARCHITECTURE.md) is the transaction's last lock: held until commit,
/// it makes transactions take ids one after the other and commit in id order (the lock is
/// released only once the commit is visible), so no reader sees an id before every smaller
/// one. Rolled back, the ids return. Since the lock serializes every transaction that
/// appends, it is taken by this one round trip, just before the commit, not by the first of
/// two.
pub async fn append_events(conn: &mut AsyncPgConnection, new: &[NewEventRow]) -> QueryResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    Prepared(Append::new(new)).execute(conn).await.map(|_| ())
}

/// The append statement, in two parts around its parameters: the events' columns as arrays.
const APPEND_HEAD: &str = "WITH v AS (SELECT * FROM unnest(";
/// The append statement's last part: number the rows after the log's last id, insert them.
const APPEND_TAIL: &str = ") WITH ORDINALITY AS v(event_type, subject, time, data, seq, n)
), numbered AS (
    SELECT take_event_ids((SELECT count(*) FROM v)) AS last_id
)
INSERT INTO events (id, event_type, subject, time, data, seq)
SELECT numbered.last_id - (SELECT count(*) FROM v) + v.n, v.event_type, v.subject, v.time,
       v.data, v.seq
FROM v, numbered";

/// Events to append, bound to the append statement (prepared once per connection).
struct Append {
    event_type: Vec<String>,
    subject: Vec<String>,
    time: Vec<i64>,
    data: Vec<String>,
    seq: Vec<Option<i64>>,
}

impl Append {
    fn new(new: &[NewEventRow]) -> Self {
        Append {
            event_type: new.iter().map(|e| e.event_type.clone()).collect(),
            subject: new.iter().map(|e| e.subject.clone()).collect(),
            time: new.iter().map(|e| e.time).collect(),
            data: new.iter().map(|e| e.data.clone()).collect(),
            seq: new.iter().map(|e| e.seq).collect(),
        }
    }
}

impl Statement for Append {
    fn walk<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(APPEND_HEAD);
        bind_array::<Array<Text>, _>(&mut out, &self.event_type, "::text[], ")?;
        bind_array::<Array<Text>, _>(&mut out, &self.subject, "::text[], ")?;
        bind_array::<Array<BigInt>, _>(&mut out, &self.time, "::bigint[], ")?;
        bind_array::<Array<Text>, _>(&mut out, &self.data, "::text[], ")?;
        bind_array::<Array<Nullable<BigInt>>, _>(&mut out, &self.seq, "::bigint[]")?;
        out.push_sql(APPEND_TAIL);
        Ok(())
    }
}

/// `KeyTakenOver` unless `receipt`'s claim still holds its key. A write that stores a receipt
/// asks first, before it changes anything; the key's row stays locked until the transaction
/// ends, so a retry taking the key over waits for it and then takes nothing: it is told the
/// key is in use, and its next try gets the answer.
pub(super) async fn key_refusal(
    conn: &mut AsyncPgConnection,
    receipt: Option<&ReceiptRow>,
) -> QueryResult<Option<RepositoryError>> {
    let Some(receipt) = receipt else {
        return Ok(None);
    };
    let held = queries::held_key(&receipt.scope, &receipt.name, receipt.lease_until)
        .select(idempotency_keys::lease_until)
        .for_update()
        .get_result::<i64>(conn)
        .await
        .optional()?
        .is_some();
    Ok((!held).then(|| taken_over(Some(receipt))))
}

/// Stores the answer of a key still held by the receipt's claim ([`key_refusal`] found it held,
/// and locked it); whether it was.
pub(super) async fn answer_key(
    conn: &mut AsyncPgConnection,
    receipt: &ReceiptRow,
) -> QueryResult<bool> {
    diesel::update(queries::held_key(
        &receipt.scope,
        &receipt.name,
        receipt.lease_until,
    ))
    .set(idempotency_keys::answer.eq(&receipt.answer))
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// Claims a key: new, expired, or unanswered past its lease; else says why not. Each step is
/// one conditional statement, so two servers claiming at once cannot both win.
async fn claim_key(
    conn: &mut AsyncPgConnection,
    row: &KeyRow,
    expired_before: i64,
) -> QueryResult<KeyClaim> {
    let (scope, name) = (row.scope.as_str(), row.name.as_str());
    // A key deleted between the insert that found it and the read (a failed request's release
    // of it, or a purge) is claimed again; a few rounds at most, since each needs another
    // request with the key to take and free it in between.
    let mut rounds = 0;
    let stored = loop {
        // A second claim of a new key waits here for the first one's transaction.
        let inserted = diesel::insert_into(idempotency_keys::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        let renewed = inserted == 0
            && diesel::update(queries::expired_key(
                scope,
                name,
                expired_before,
                row.created_at,
            ))
            .set(row)
            .execute(conn)
            .await?
                == 1;
        if inserted == 1 || renewed {
            return Ok(KeyClaim::Claimed);
        }
        let stored = queries::key_claim_state(scope, name)
            .get_result(conn)
            .await
            .optional()?;
        rounds += 1;
        match stored {
            Some(stored) => break stored,
            // Still going after that: answered as a key in use (retried after a second).
            None if rounds == 3 => return Ok(KeyClaim::InUse),
            None => {}
        }
    };
    Ok(
        match judge_claim(stored, &row.fingerprint, row.created_at) {
            ClaimStep::Decided(claim) => claim,
            ClaimStep::TakeOver => {
                let taken = diesel::update(queries::abandoned_key(
                    scope,
                    name,
                    &row.fingerprint,
                    row.created_at,
                ))
                .set(idempotency_keys::lease_until.eq(row.lease_until))
                .execute(conn)
                .await?;
                if taken == 1 {
                    KeyClaim::Claimed
                } else {
                    KeyClaim::InUse
                }
            }
        },
    )
}
