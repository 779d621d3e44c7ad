//! The SQLite side of webhooks: writes on the writer thread (inside its transaction), reads
//! on the reading pool. The single writer serialises every claim and every enqueue.

use diesel::prelude::*;
use diesel::result::QueryResult;
use orchestrator_core::RepositoryError;
use orchestrator_core::api::DeliveriesPage;
use orchestrator_core::webhook::DeliveryStatus;

use super::ops::EventIds;
use super::prepared;
use crate::storage::models::{
    DeliveryRow, DueRow, EventRow, ListedDeliveryRow, SizedPage, TransitionRow, WebhookRow,
    enqueued, to_i64,
};
use crate::storage::queries;
use crate::storage::schema::{webhook_deliveries, webhooks};
use crate::storage::webhooks::{
    BacklogRow, DueDelivery, WebhookBackend, WebhookWrite, page_statuses, redelivery,
};
use crate::storage::write::{Write, Written, chunk_before, last_chunk};

/// Every webhook.
pub fn all(conn: &mut SqliteConnection) -> QueryResult<Vec<WebhookRow>> {
    queries::all_webhooks()
        .select(WebhookRow::as_select())
        .load(conn)
}

/// One webhook.
pub fn one(conn: &mut SqliteConnection, id: &str) -> QueryResult<Option<WebhookRow>> {
    queries::webhook(id)
        .select(WebhookRow::as_select())
        .get_result(conn)
        .optional()
}

/// The first `rows` of a webhook's deliveries on `page` (its status and `before`).
pub fn page(
    conn: &mut SqliteConnection,
    webhook_id: &str,
    page: &DeliveriesPage,
    rows: i64,
) -> QueryResult<Vec<ListedDeliveryRow>> {
    let before = page.before.map_or(i64::MAX, to_i64);
    queries::delivery_page(webhook_id, page_statuses(page), before, rows)
        .select(ListedDeliveryRow::as_select())
        .load(conn)
}

/// Carries out a webhook write inside the writer's transaction.
pub fn apply(
    conn: &mut SqliteConnection,
    ids: &EventIds,
    write: &WebhookWrite,
) -> QueryResult<Written> {
    let count = |n: usize| Written::Count(u64::try_from(n).unwrap_or(0));
    match write {
        WebhookWrite::Create(row, receipt) => {
            if let Some(refusal) = super::ops::key_refusal(conn, receipt.as_ref())? {
                return Ok(Written::Refused(refusal));
            }
            let row = WebhookRow {
                enqueued_through: ids.last(),
                ..row.clone()
            };
            diesel::insert_into(webhooks::table)
                .values(&row)
                .execute(conn)?;
            super::ops::answer_key(conn, receipt.as_ref())?;
            Ok(Written::Done)
        }
        WebhookWrite::MarkDeleted(id) => diesel::update(queries::webhook(id))
            .set(webhooks::deleted.eq(true))
            .execute(conn)
            .map(count),
        WebhookWrite::DeleteDeliveries(id) => deliveries_chunk(conn, id).map(count),
        WebhookWrite::Delete(id) => delete(conn, id).map(count),
        WebhookWrite::FinishDeletion => {
            let id: Option<String> = queries::unfinished_deletion().get_result(conn).optional()?;
            let Some(id) = id else {
                return Ok(count(0));
            };
            let mut deleted = deliveries_chunk(conn, &id)?;
            if last_chunk(deleted) {
                deleted += delete(conn, &id)?;
            }
            Ok(count(deleted))
        }
        WebhookWrite::Enqueue {
            webhook_id,
            now,
            limit,
        } => {
            let Some(webhook) = one(conn, webhook_id)? else {
                return Ok(Written::Count(0));
            };
            // Up to `limit` events or a few megabytes of them (each delivery keeps a copy).
            let mut page = SizedPage::new(webhook.enqueued_through, *limit);
            while let Some((after, rows)) = page.ask() {
                let found = queries::any_events_after(after, rows)
                    .select((EventRow::as_select(), Option::<TransitionRow>::as_select()))
                    .load(conn)?;
                page.take(found, rows);
            }
            let (rows, cut) = page.finish();
            let fetched = rows.len();
            let (deliveries, through, read) = match webhook.deliveries(rows, *now) {
                Ok(made) => made,
                Err(corrupt) => return Ok(Written::Refused(corrupt)),
            };
            for delivery in &deliveries {
                diesel::insert_into(webhook_deliveries::table)
                    .values(delivery)
                    .on_conflict_do_nothing()
                    .execute(conn)?;
            }
            prepared::update(
                queries::webhook(webhook_id),
                webhooks::enqueued_through.eq(through),
            )
            .execute(conn)?;
            Ok(count(enqueued(read, fetched, cut.is_some(), *limit)))
        }
        WebhookWrite::Claim {
            now,
            lease_until,
            room,
        } => {
            // Nothing due (the usual case, five times a second): one look at the due index.
            let any_due: bool = diesel::select(diesel::dsl::exists(queries::due_deliveries(*now)))
                .get_result(conn)?;
            if !any_due {
                return Ok(Written::Due(Vec::new()));
            }
            let subscribed: Vec<String> = queries::webhook_ids_but(room.full()).load(conn)?;
            let mut candidates = Vec::new();
            for webhook in &subscribed {
                let of: Vec<(String, String, Option<i64>)> =
                    queries::due_of(*now, webhook, room.room_of(webhook))
                        .select((
                            webhook_deliveries::id,
                            webhook_deliveries::webhook_id,
                            webhook_deliveries::next_attempt_at,
                        ))
                        .load(conn)?;
                candidates.extend(of);
            }
            let ids = room.pick(candidates);
            if ids.is_empty() {
                return Ok(Written::Due(Vec::new()));
            }
            prepared::update(
                webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&ids)),
                webhook_deliveries::lease_until.eq(lease_until),
            )
            .execute(conn)?;
            let due: Vec<DueRow> = queries::claimed_deliveries(ids)
                .select((DeliveryRow::as_select(), (webhooks::url, webhooks::secret)))
                .load(conn)?;
            Ok(Written::Due(
                due.into_iter().map(DueDelivery::from).collect(),
            ))
        }
        WebhookWrite::Record(records) => {
            let mut stored = 0;
            for record in records {
                let as_claimed = queries::leased_delivery_as_claimed(
                    &record.id,
                    record.lease,
                    record.redeliveries,
                );
                let mut done = prepared::update(as_claimed, &record.changes).execute(conn)?;
                if done == 0 {
                    // Redelivered while in flight (or the lease is gone: then this is 0 too).
                    done = prepared::update(
                        queries::leased_delivery(&record.id, record.lease),
                        &record.counted,
                    )
                    .execute(conn)?;
                }
                stored += done;
            }
            Ok(count(stored))
        }
        WebhookWrite::Redeliver {
            webhook_id,
            delivery_id,
            now,
            receipt,
        } => {
            if let Some(refusal) = super::ops::key_refusal(conn, receipt.as_ref())? {
                return Ok(Written::Refused(refusal));
            }
            // On the one writer: nothing changes the row between this read and the update.
            let Some(lease) = queries::delivery_of(webhook_id, delivery_id)
                .select(webhook_deliveries::lease_until)
                .get_result::<Option<i64>>(conn)
                .optional()?
            else {
                return Ok(count(0));
            };
            let (lease, after) = redelivery(lease, *now);
            let pending = DeliveryStatus::Pending.as_str();
            let n = diesel::update(queries::delivery_of(webhook_id, delivery_id))
                .set(queries::redelivered(pending, *now, lease, after))
                .execute(conn)?;
            super::ops::answer_key(conn, receipt.as_ref())?;
            Ok(count(n))
        }
        WebhookWrite::Purge(before) => {
            let end: Option<i64> = queries::deliveries_chunk_end(*before)
                .get_result(conn)
                .optional()?;
            let through = chunk_before(end, *before);
            diesel::delete(queries::settled_deliveries_before(through))
                .execute(conn)
                .map(count)
        }
        WebhookWrite::ReleaseLeases => diesel::update(queries::leased_deliveries())
            .set(webhook_deliveries::lease_until.eq(None::<i64>))
            .execute(conn)
            .map(count),
    }
}

/// Deletes up to [`PURGE_CHUNK`](crate::storage::write::PURGE_CHUNK) of a webhook's
/// deliveries, the oldest events first (on the one writer: nothing else deletes them
/// meanwhile).
fn deliveries_chunk(conn: &mut SqliteConnection, id: &str) -> QueryResult<usize> {
    let end: Option<i64> = queries::deliveries_chunk_end_of(id)
        .get_result(conn)
        .optional()?;
    diesel::delete(queries::deliveries_of_through(id, end.unwrap_or(i64::MAX))).execute(conn)
}

/// Deletes a webhook, marked or not, with what is left of its deliveries.
fn delete(conn: &mut SqliteConnection, id: &str) -> QueryResult<usize> {
    let rest =
        diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(id)))
            .execute(conn)?;
    Ok(rest + diesel::delete(queries::webhook_even_deleted(id)).execute(conn)?)
}

#[async_trait::async_trait]
impl WebhookBackend for super::SqliteRepository {
    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        super::SqliteRepository::write(self, write).await
    }

    async fn webhook_rows(&self) -> Result<Vec<WebhookRow>, RepositoryError> {
        self.readers.run(all).await
    }

    async fn webhook_row(&self, id: &str) -> Result<Option<WebhookRow>, RepositoryError> {
        let id = id.to_owned();
        self.readers.run(move |conn| one(conn, &id)).await
    }

    async fn delivery_rows(
        &self,
        webhook_id: &str,
        page: &DeliveriesPage,
        rows: i64,
    ) -> Result<Vec<ListedDeliveryRow>, RepositoryError> {
        let (id, page) = (webhook_id.to_owned(), *page);
        self.readers
            .run(move |conn| self::page(conn, &id, &page, rows))
            .await
    }

    async fn backlog_row(&self, now: i64) -> Result<BacklogRow, RepositoryError> {
        self.readers
            .run(move |conn| {
                let pending = queries::pending_deliveries()
                    .count()
                    .get_result::<i64>(conn)?;
                let earliest = queries::earliest_live_due(now)
                    .get_result::<Option<i64>>(conn)
                    .optional()?
                    .flatten();
                let unenqueued = match queries::oldest_webhook_mark().get_result(conn)? {
                    Some(mark) => queries::first_event_time_after(mark)
                        .get_result::<i64>(conn)
                        .optional()?,
                    None => None,
                };
                Ok((pending, earliest, unenqueued))
            })
            .await
    }
}
