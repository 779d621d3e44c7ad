//! Every query, built once and independent of the back end (`#[dsl::auto_type]` infers each
//! one's type). `sqlite` and `postgres` only choose the columns to read and run them (and
//! put the two halves of one workflow's events together: `own_events_of`, `entry_events_of`).
//!
//! Lookups by primary key are run with `get_result`, never `first`: `first` adds `LIMIT ?`,
//! and SQLite recompiles a statement whose LIMIT parameter is rebound on every run.

use diesel::dsl;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::schema::{
    consultations, event_log, events, gate_overdue_notes, idempotency_keys, storage_probe,
    transitions, webhook_deliveries, webhooks, workflows,
};
use super::write::PURGE_CHUNK;

/// One workflow by feature id.
#[dsl::auto_type]
pub fn workflow<'a>(feature_id: &'a str) -> _ {
    workflows::table.find(feature_id)
}

/// The workflows of these feature ids (those that exist).
#[dsl::auto_type]
pub fn workflows_of<'a>(feature_ids: Vec<&'a str>) -> _ {
    workflows::table.filter(workflows::feature_id.eq_any(feature_ids))
}

/// Up to `limit` workflows in feature-id order after `after` (`""` for the first page), in
/// one of `states`.
#[dsl::auto_type]
pub fn page<'a>(states: Vec<&'a str>, after: &'a str, limit: i64) -> _ {
    workflows::table
        .filter(workflows::state.eq_any(states))
        .filter(workflows::feature_id.gt(after))
        .order(workflows::feature_id.asc())
        .limit(limit)
}

/// Up to `limit` workflows in feature-id order after `after` whose stay at the gate was due
/// before `now` (Unix microseconds).
#[dsl::auto_type]
pub fn overdue_page<'a>(now: i64, after: &'a str, limit: i64) -> _ {
    workflows::table
        .filter(workflows::gate_due_at.lt(now))
        .filter(workflows::feature_id.gt(after))
        .order(workflows::feature_id.asc())
        .limit(limit)
}

/// Up to `limit` workflows whose stay at the gate has a deadline (only a stay at the gate
/// has one), the earliest due first: through the partial index on `gate_due_at`.
#[dsl::auto_type]
pub fn gates_due_first(limit: i64) -> _ {
    workflows::table
        .filter(workflows::gate_due_at.is_not_null())
        .order((workflows::gate_due_at.asc(), workflows::feature_id.asc()))
        .limit(limit)
}

/// Up to `limit` workflows in state `gate` (GATE_1) without a deadline, in feature-id order.
#[dsl::auto_type]
pub fn gates_without_deadline<'a>(gate: &'a str, limit: i64) -> _ {
    workflows::table
        .filter(workflows::state.eq(gate))
        .filter(workflows::gate_due_at.is_null())
        .order(workflows::feature_id.asc())
        .limit(limit)
}

/// How many workflows' stays at the gate were due before `now` (Unix microseconds).
#[dsl::auto_type]
pub fn overdue_count(now: i64) -> _ {
    workflows::table
        .filter(workflows::gate_due_at.lt(now))
        .select(dsl::count_star())
}

/// Up to `limit` workflows whose stay at the gate was due before `now` (Unix microseconds)
/// and is not noted yet, the longest overdue first.
#[dsl::auto_type]
pub fn unnoted_overdue(now: i64, limit: i64) -> _ {
    workflows::table
        .filter(workflows::gate_due_at.lt(now))
        .filter(dsl::not(dsl::exists(
            gate_overdue_notes::table
                .filter(gate_overdue_notes::feature_id.eq(workflows::feature_id))
                .filter(
                    gate_overdue_notes::due_at
                        .nullable()
                        .eq(workflows::gate_due_at),
                ),
        )))
        .order(workflows::gate_due_at.asc())
        .limit(limit)
}

/// `(state, count)` for every state that has workflows.
#[dsl::auto_type]
pub fn state_counts() -> _ {
    workflows::table
        .group_by(workflows::state)
        .select((workflows::state, dsl::count_star()))
}

/// A workflow's history, oldest first.
#[dsl::auto_type]
pub fn history<'a>(feature_id: &'a str) -> _ {
    transitions::table
        .filter(transitions::feature_id.eq(feature_id))
        .order(transitions::seq.asc())
}

/// A workflow's hub session.
#[dsl::auto_type]
pub fn hub_session<'a>(feature_id: &'a str) -> _ {
    workflows::table
        .find(feature_id)
        .select(workflows::hub_session_id)
}

/// A workflow's state.
#[dsl::auto_type]
pub fn state<'a>(feature_id: &'a str) -> _ {
    workflows::table.find(feature_id).select(workflows::state)
}

/// A workflow's version.
#[dsl::auto_type]
pub fn version<'a>(feature_id: &'a str) -> _ {
    workflows::table.find(feature_id).select(workflows::version)
}

/// A workflow's version and the deadline of its stay at the gate (null elsewhere).
#[dsl::auto_type]
pub fn stay_of<'a>(feature_id: &'a str) -> _ {
    workflows::table
        .find(feature_id)
        .select((workflows::version, workflows::gate_due_at))
}

/// A workflow's published consultations, oldest first (reservations are listed by no reader).
#[dsl::auto_type]
pub fn consultations_of<'a>(feature_id: &'a str) -> _ {
    consultations::table
        .filter(consultations::feature_id.eq(feature_id))
        .filter(consultations::visible.eq(true))
        .order((consultations::created_at.asc(), consultations::id.asc()))
}

/// These workflows' published consultations that block their gates (`asking` or
/// `pending_human`, given as their stored text; a reservation holds nothing), oldest first.
#[dsl::auto_type]
pub fn gate_blockers_of<'a>(feature_ids: Vec<&'a str>, asking: &'a str, pending: &'a str) -> _ {
    consultations::table
        .filter(consultations::feature_id.eq_any(feature_ids))
        .filter(consultations::visible.eq(true))
        .filter(
            consultations::status
                .eq(asking)
                .or(consultations::status.eq(pending)),
        )
        .order((consultations::created_at.asc(), consultations::id.asc()))
}

/// The workflow row a compare-and-set may change: this feature at this version.
#[dsl::auto_type]
pub fn at_version<'a>(feature_id: &'a str, expected: i64) -> _ {
    workflows::table
        .filter(workflows::feature_id.eq(feature_id))
        .filter(workflows::version.eq(expected))
}

/// The workflow row whose hub session may be swapped: none stored, or `expected`.
#[dsl::auto_type]
pub fn swappable_session<'a>(feature_id: &'a str, expected: &'a str) -> _ {
    workflows::table
        .filter(workflows::feature_id.eq(feature_id))
        .filter(
            workflows::hub_session_id
                .is_null()
                .or(workflows::hub_session_id.eq(expected)),
        )
}

/// A consultation's status, as stored.
#[dsl::auto_type]
pub fn consultation_status<'a>(id: &'a str) -> _ {
    consultations::table.find(id).select(consultations::status)
}

/// A published consultation, if it is still `asking` or `pending_human` (the only kinds that
/// may change).
#[dsl::auto_type]
pub fn unsettled_consultation<'a>(id: &'a str, asking: &'a str, pending: &'a str) -> _ {
    consultations::table
        .find(id)
        .filter(consultations::visible.eq(true))
        .filter(
            consultations::status
                .eq(asking)
                .or(consultations::status.eq(pending)),
        )
}

/// A reservation: a consultation no reader sees yet.
#[dsl::auto_type]
pub fn reservation<'a>(id: &'a str) -> _ {
    consultations::table
        .find(id)
        .filter(consultations::visible.eq(false))
}

/// A consultation is a reservation, in the words of the partial index
/// `consultations_reserved` (a literal, as [`SETTLED`]).
const RESERVED: &str = "visible = false";

/// Reservations made before `before` (Unix microseconds).
#[dsl::auto_type]
pub fn reservations_before(before: i64) -> _ {
    let reserved: SqlLiteral<Bool> = dsl::sql(RESERVED);
    consultations::table
        .filter(reserved)
        .filter(consultations::created_at.lt(before))
}

/// A consultation is still being asked, in the words of the partial index
/// `consultations_asking` (a literal, as [`SETTLED`]).
const ASKING: &str = "status = 'asking'";

/// Published consultations still `asking`, asked before `before` (Unix microseconds).
#[dsl::auto_type]
pub fn asks_before(before: i64) -> _ {
    let asking: SqlLiteral<Bool> = dsl::sql(ASKING);
    consultations::table
        .filter(consultations::visible.eq(true))
        .filter(asking)
        .filter(consultations::created_at.lt(before))
}

/// What a claim that found key `(scope, name)` taken judges it by: its fingerprint, its kept
/// answer and its lease.
#[dsl::auto_type]
pub fn key_claim_state<'a>(scope: &'a str, name: &'a str) -> _ {
    idempotency_keys::table.find((scope, name)).select((
        idempotency_keys::fingerprint,
        idempotency_keys::answer,
        idempotency_keys::lease_until,
    ))
}

/// One idempotency key, if it has no answer and the claim that took the lease `lease_until`
/// still holds it (no retry took it over, it did not expire and was not claimed anew).
#[dsl::auto_type]
pub fn held_key<'a>(scope: &'a str, name: &'a str, lease_until: i64) -> _ {
    idempotency_keys::table
        .find((scope, name))
        .filter(idempotency_keys::answer.is_null())
        .filter(idempotency_keys::lease_until.eq(lease_until))
}

/// Every idempotency key that has no answer.
#[dsl::auto_type]
pub fn unanswered_keys() -> _ {
    idempotency_keys::table.filter(idempotency_keys::answer.is_null())
}

/// One idempotency key, if it was first claimed before `before` (it has expired) and no request
/// holds it at `now` (it was answered, or its lease ended): one a retry took over just before
/// it expired is still that retry's.
#[dsl::auto_type]
pub fn expired_key<'a>(scope: &'a str, name: &'a str, before: i64, now: i64) -> _ {
    idempotency_keys::table
        .find((scope, name))
        .filter(idempotency_keys::created_at.lt(before))
        .filter(
            idempotency_keys::answer
                .is_not_null()
                .or(idempotency_keys::lease_until.lt(now)),
        )
}

/// One idempotency key, if it has no answer, its lease ended before `now` and it was claimed
/// for the request `fingerprint` names: a key deleted and claimed again for another request
/// since it was read is not taken over.
#[dsl::auto_type]
pub fn abandoned_key<'a>(scope: &'a str, name: &'a str, fingerprint: &'a str, now: i64) -> _ {
    idempotency_keys::table
        .find((scope, name))
        .filter(idempotency_keys::fingerprint.eq(fingerprint))
        .filter(idempotency_keys::answer.is_null())
        .filter(idempotency_keys::lease_until.lt(now))
}

/// Idempotency keys first claimed before `before`.
#[dsl::auto_type]
pub fn keys_before(before: i64) -> _ {
    idempotency_keys::table.filter(idempotency_keys::created_at.lt(before))
}

/// When the [`PURGE_CHUNK`]th oldest key first claimed before `before` was: a purge's chunk
/// deletes the keys claimed until then (a few more only where keys share its microsecond), in
/// `created_at`'s index order. None: fewer are left.
#[dsl::auto_type]
pub fn keys_chunk_end(before: i64) -> _ {
    let skip: i64 = PURGE_CHUNK - 1;
    let one: i64 = 1;
    idempotency_keys::table
        .filter(idempotency_keys::created_at.lt(before))
        .select(idempotency_keys::created_at)
        .order(idempotency_keys::created_at)
        .offset(skip)
        .limit(one)
}

/// The probe row's new value.
#[dsl::auto_type]
pub fn probe_row(at: i64) -> _ {
    (storage_probe::id.eq(1_i32), storage_probe::at.eq(at))
}

/// Every event, each with the history entry it refers to (if any).
#[dsl::auto_type]
pub fn events_with_entries() -> _ {
    events::table.left_join(
        transitions::table.on(transitions::feature_id
            .eq(events::subject)
            .and(events::seq.eq(transitions::seq.nullable()))),
    )
}

/// Up to `limit` events after `after` up to `through` of one of `types`, in id order, each
/// with the history entry it refers to (if any).
#[dsl::auto_type]
pub fn events_after<'a>(after: i64, through: i64, types: Vec<&'a str>, limit: i64) -> _ {
    events_with_entries()
        .filter(events::id.gt(after))
        .filter(events::id.le(through))
        .filter(events::event_type.eq_any(types))
        .order(events::id.asc())
        .limit(limit)
}

/// The first event id after `after` (a seek of the primary key): load it with
/// `.first(conn).optional()`.
#[dsl::auto_type]
pub fn first_event_after(after: i64) -> _ {
    events::table
        .filter(events::id.gt(after))
        .order(events::id.asc())
        .select(events::id)
}

/// The newest event id after `after` up to `through` (a range of the primary key, read from
/// its end): load it with `.first(conn).optional()`.
#[dsl::auto_type]
pub fn last_event_within(after: i64, through: i64) -> _ {
    events::table
        .filter(events::id.gt(after))
        .filter(events::id.le(through))
        .order(events::id.desc())
        .select(events::id)
}

/// One workflow's events after `after` of one of `types` that refer to no history entry
/// (through the subject index, which holds only these). Its `workflow.transitioned` events
/// are [`entry_events_of`]; the two are read as one page, `UNION ALL` in id order.
#[dsl::auto_type]
pub fn own_events_of<'a>(subject: &'a str, after: i64, types: Vec<&'a str>) -> _ {
    events_with_entries()
        .filter(events::subject.eq(subject))
        .filter(events::seq.is_null())
        .filter(events::id.gt(after))
        .filter(events::event_type.eq_any(types))
}

/// One workflow's events after `after` of one of `types` that refer to a history entry,
/// found through its entries (each names its event), each with its entry.
#[dsl::auto_type]
pub fn entry_events_of<'a>(subject: &'a str, after: i64, types: Vec<&'a str>) -> _ {
    transitions::table
        .inner_join(events::table.on(events::id.nullable().eq(transitions::event_id)))
        .filter(transitions::feature_id.eq(subject))
        .filter(transitions::event_id.gt(after))
        .filter(events::event_type.eq_any(types))
}

/// The event log's bounds: `(last_id, purged_through)`.
#[dsl::auto_type]
pub fn event_bounds() -> _ {
    event_log::table
        .find(1_i32)
        .select((event_log::last_id, event_log::purged_through))
}

/// The oldest event made at or after `before` (Unix microseconds) among those after `purged`
/// up to `through`, if any: retention keeps it and every event after it, and looks no further
/// than the chunk it may delete (a bounded range of the primary key).
#[dsl::auto_type]
pub fn first_kept(before: i64, purged: i64, through: i64) -> _ {
    events::table
        .filter(events::id.gt(purged))
        .filter(events::id.le(through))
        .filter(events::time.ge(before))
        .select(events::id)
        .order(events::id.asc())
        .limit(1_i64)
}

/// The lowest mark of the webhooks not being deleted: every event after it is still to become
/// a delivery of some webhook (`None` without webhooks).
pub fn oldest_webhook_mark()
-> dsl::Select<live_webhooks, diesel::helper_types::min<webhooks::enqueued_through>> {
    live_webhooks().select(dsl::min(webhooks::enqueued_through))
}

/// When the first event after `after` was made (Unix microseconds), if there is one.
#[dsl::auto_type]
pub fn first_event_time_after(after: i64) -> _ {
    let one: i64 = 1;
    events::table
        .filter(events::id.gt(after))
        .select(events::time)
        .order(events::id.asc())
        .limit(one)
}

/// The events up to `through`.
#[dsl::auto_type]
pub fn events_through(through: i64) -> _ {
    events::table.filter(events::id.le(through))
}

/// Up to `limit` events after `after`, of every type, in id order, each with the history
/// entry it refers to (if any).
#[dsl::auto_type]
pub fn any_events_after(after: i64, limit: i64) -> _ {
    events_with_entries()
        .filter(events::id.gt(after))
        .order(events::id.asc())
        .limit(limit)
}

/// The webhooks not being deleted: a webhook marked `deleted` is passed over by every read,
/// enqueue and claim while its deliveries go.
#[dsl::auto_type]
pub fn live_webhooks() -> _ {
    webhooks::table.filter(webhooks::deleted.eq(false))
}

/// One webhook by id, unless it is being deleted.
#[dsl::auto_type]
pub fn webhook<'a>(id: &'a str) -> _ {
    live_webhooks().filter(webhooks::id.eq(id))
}

/// One webhook by id, even if it is being deleted (for the end of its deletion).
#[dsl::auto_type]
pub fn webhook_even_deleted<'a>(id: &'a str) -> _ {
    webhooks::table.find(id)
}

/// A webhook whose deletion was cut short (marked `deleted`, its row still there), or is
/// under way.
#[dsl::auto_type]
pub fn unfinished_deletion() -> _ {
    let one: i64 = 1;
    webhooks::table
        .filter(webhooks::deleted.eq(true))
        .select(webhooks::id)
        .limit(one)
}

/// Every webhook not being deleted, oldest first.
#[dsl::auto_type]
pub fn all_webhooks() -> _ {
    live_webhooks().order((webhooks::created_at.asc(), webhooks::id.asc()))
}

/// A delivery is pending, in the words of the partial indexes `webhook_deliveries_due` and
/// `webhook_deliveries_due_by_webhook` (a literal, as [`SETTLED`] is: bound, the status kept
/// SQLite from those indexes, and every claim read all of a webhook's deliveries).
const PENDING: &str = "status = 'pending'";

/// The ids of the webhooks not being deleted (a marked webhook's deliveries are neither
/// claimed nor counted while they go).
#[dsl::auto_type]
pub fn live_webhook_ids() -> _ {
    live_webhooks().select(webhooks::id)
}

/// Every pending delivery of a webhook not being deleted: due, waiting for its next attempt,
/// or being attempted.
#[dsl::auto_type]
pub fn pending_deliveries() -> _ {
    let pending: SqlLiteral<Bool> = dsl::sql(PENDING);
    let live: live_webhook_ids = live_webhook_ids();
    webhook_deliveries::table
        .filter(pending)
        .filter(webhook_deliveries::webhook_id.eq_any(live))
}

/// Pending deliveries due at `now` (Unix microseconds) that no replica is attempting, of
/// every webhook: a claim reads them through the partial index on the due ones, and passes
/// over a webhook being deleted by the webhooks it reads them for.
#[dsl::auto_type]
pub fn due_deliveries(now: i64) -> _ {
    let pending: SqlLiteral<Bool> = dsl::sql(PENDING);
    webhook_deliveries::table
        .filter(pending)
        .filter(webhook_deliveries::next_attempt_at.le(now))
        .filter(
            webhook_deliveries::lease_until
                .is_null()
                .or(webhook_deliveries::lease_until.lt(now)),
        )
}

/// When the longest-due of the [`due_deliveries`] of the webhooks not being deleted became
/// due: read along the due index, the first whose webhook is live (a `min` over the join
/// read every due delivery on PostgreSQL, slower the larger the backlog it measures).
#[dsl::auto_type]
pub fn earliest_live_due(now: i64) -> _ {
    let due: due_deliveries = due_deliveries(now);
    let live: live_webhook_ids = live_webhook_ids();
    let one: i64 = 1;
    due.filter(webhook_deliveries::webhook_id.eq_any(live))
        .select(webhook_deliveries::next_attempt_at)
        .order(webhook_deliveries::next_attempt_at.asc())
        .limit(one)
}

/// The ids of the webhooks not being deleted other than `except`.
#[dsl::auto_type]
pub fn webhook_ids_but(except: Vec<String>) -> _ {
    live_webhooks()
        .filter(webhooks::id.ne_all(except))
        .select(webhooks::id)
}

/// Up to `limit` of one webhook's deliveries due at `now`, the longest due first.
#[dsl::auto_type]
pub fn due_of<'a>(now: i64, webhook_id: &'a str, limit: i64) -> _ {
    let due: due_deliveries = due_deliveries(now);
    due.filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .order(webhook_deliveries::next_attempt_at.asc())
        .limit(limit)
}

/// The claimed deliveries `ids` with their webhook's URL and secret.
#[dsl::auto_type]
pub fn claimed_deliveries(ids: Vec<String>) -> _ {
    webhook_deliveries::table
        .inner_join(webhooks::table)
        .filter(webhook_deliveries::id.eq_any(ids))
        .order(webhook_deliveries::next_attempt_at.asc())
}

/// A delivery, if the claim that set `lease` still holds it.
#[dsl::auto_type]
pub fn leased_delivery<'a>(id: &'a str, lease: i64) -> _ {
    webhook_deliveries::table
        .filter(webhook_deliveries::id.eq(id))
        .filter(webhook_deliveries::lease_until.eq(lease))
}

/// A delivery, if the claim that set `lease` still holds it and it was not redelivered since
/// the claim read `redeliveries`.
#[dsl::auto_type]
pub fn leased_delivery_as_claimed<'a>(id: &'a str, lease: i64, redeliveries: i32) -> _ {
    webhook_deliveries::table
        .filter(webhook_deliveries::id.eq(id))
        .filter(webhook_deliveries::lease_until.eq(lease))
        .filter(webhook_deliveries::redeliveries.eq(redeliveries))
}

/// Every pending delivery an attempt holds (or held, when its lease has ended), read through
/// the partial index of pending deliveries (a settled one holds no lease).
#[dsl::auto_type]
pub fn leased_deliveries() -> _ {
    let pending: SqlLiteral<Bool> = dsl::sql(PENDING);
    webhook_deliveries::table
        .filter(pending)
        .filter(webhook_deliveries::lease_until.is_not_null())
}

/// One webhook's delivery.
#[dsl::auto_type]
pub fn delivery_of<'a>(webhook_id: &'a str, id: &'a str) -> _ {
    webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .filter(webhook_deliveries::id.eq(id))
}

/// Up to `limit` of a webhook's deliveries in one of `statuses` for events below `before`,
/// newest event first.
#[dsl::auto_type]
pub fn delivery_page<'a>(
    webhook_id: &'a str,
    statuses: Vec<&'a str>,
    before: i64,
    limit: i64,
) -> _ {
    webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .filter(webhook_deliveries::status.eq_any(statuses))
        .filter(webhook_deliveries::event_id.lt(before))
        .order(webhook_deliveries::event_id.desc())
        .limit(limit)
}

/// A delivery is settled (delivered or failed), in the words of the partial index
/// `webhook_deliveries_settled`: a literal, not a bound value, so that both databases see that
/// a query with it may read that index (a prepared statement's generic plan could not prove
/// the index's predicate from a parameter).
const SETTLED: &str = "status <> 'pending'";

/// The event of a webhook's [`PURGE_CHUNK`]th delivery, in event order (through its unique
/// index on the webhook and the event): a chunk of the webhook's deletion deletes its
/// deliveries up to that event. None: fewer are left.
#[dsl::auto_type]
pub fn deliveries_chunk_end_of<'a>(webhook_id: &'a str) -> _ {
    let skip: i64 = PURGE_CHUNK - 1;
    let one: i64 = 1;
    webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .select(webhook_deliveries::event_id)
        .order(webhook_deliveries::event_id)
        .offset(skip)
        .limit(one)
}

/// A webhook's deliveries of events up to `through`.
#[dsl::auto_type]
pub fn deliveries_of_through<'a>(webhook_id: &'a str, through: i64) -> _ {
    webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .filter(webhook_deliveries::event_id.le(through))
}

/// Delivered and failed deliveries made before `before` (Unix microseconds).
#[dsl::auto_type]
pub fn settled_deliveries_before(before: i64) -> _ {
    let settled: SqlLiteral<Bool> = dsl::sql(SETTLED);
    webhook_deliveries::table
        .filter(settled)
        .filter(webhook_deliveries::created_at.lt(before))
}

/// When the [`PURGE_CHUNK`]th oldest settled delivery made before `before` was made, as
/// [`keys_chunk_end`] for keys (through `webhook_deliveries_settled`, which holds no pending
/// delivery to step over).
#[dsl::auto_type]
pub fn deliveries_chunk_end(before: i64) -> _ {
    let skip: i64 = PURGE_CHUNK - 1;
    let one: i64 = 1;
    let settled: SqlLiteral<Bool> = dsl::sql(SETTLED);
    webhook_deliveries::table
        .filter(settled)
        .filter(webhook_deliveries::created_at.lt(before))
        .select(webhook_deliveries::created_at)
        .order(webhook_deliveries::created_at)
        .offset(skip)
        .limit(one)
}

/// What a redelivery at `now` writes (see `webhooks::redelivery` for `lease` and `after`):
/// due now, counted, its retry schedule starting `after` attempts past those made.
#[dsl::auto_type]
pub fn redelivered<'a>(pending: &'a str, now: i64, lease: Option<i64>, after: i32) -> _ {
    let one: i32 = 1;
    (
        webhook_deliveries::status.eq(pending),
        webhook_deliveries::next_attempt_at.eq(now),
        webhook_deliveries::redeliveries.eq(webhook_deliveries::redeliveries + one),
        webhook_deliveries::schedule_from.eq(webhook_deliveries::attempts + after),
        webhook_deliveries::lease_until.eq(lease),
    )
}

#[cfg(test)]
mod tests {
    use orchestrator_core::webhook::DeliveryStatus;

    #[test]
    fn the_settled_predicate_names_the_pending_status_as_stored() {
        let pending = DeliveryStatus::Pending.as_str();
        assert_eq!(super::SETTLED, format!("status <> '{pending}'"));
        assert_eq!(super::PENDING, format!("status = '{pending}'"));
    }
}
