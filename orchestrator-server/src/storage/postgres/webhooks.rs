//! The PostgreSQL side of webhooks: each write in a transaction of its own. An enqueue locks
//! its webhook's row, so replicas enqueue one after the other; a claim skips the deliveries
//! another replica is claiming.

use diesel::prelude::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel::result::QueryResult;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orchestrator_core::RepositoryError;
use orchestrator_core::api::DeliveriesPage;
use orchestrator_core::webhook::DeliveryStatus;

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

/// Every webhook's deliveries due at `$1` (Unix microseconds) that no replica is attempting,
/// the longest due first, up to its room in the claim: the claim's limit (`$2`), and the
/// attempts one webhook may hold (`$3`) less those it holds (`$5`, by webhook id in `$4`).
/// Locked, passing over those another replica's claim holds, and those of a webhook being
/// deleted. One statement for every webhook (with `webhook_deliveries_due_by_webhook` under
/// each), not a round trip each: with thousands of webhooks, one per webhook outlasted the
/// statement timeout over a network.
/// The same deliveries as `queries::due_deliveries` reads (its `status = 'pending'` is the
/// index's predicate).
const DUE_BY_WEBHOOK: &str = "SELECT d.id, d.webhook_id, d.next_attempt_at
FROM webhooks w
CROSS JOIN LATERAL (
    SELECT id, webhook_id, next_attempt_at FROM webhook_deliveries
    WHERE webhook_id = w.id AND status = 'pending' AND next_attempt_at <= $1
      AND (lease_until IS NULL OR lease_until < $1)
    ORDER BY next_attempt_at
    LIMIT GREATEST(0, LEAST($2, $3 - COALESCE(
        (SELECT f.held FROM unnest($4::text[], $5::bigint[]) AS f(id, held) WHERE f.id = w.id),
        0)))
    FOR UPDATE SKIP LOCKED
) d
WHERE NOT w.deleted";

/// A delivery [`DUE_BY_WEBHOOK`] found.
#[derive(diesel::QueryableByName)]
struct Candidate {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    webhook_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    next_attempt_at: Option<i64>,
}

/// Every webhook.
pub async fn all(conn: &mut AsyncPgConnection) -> QueryResult<Vec<WebhookRow>> {
    queries::all_webhooks()
        .select(WebhookRow::as_select())
        .load(conn)
        .await
}

/// One webhook.
pub async fn one(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<Option<WebhookRow>> {
    queries::webhook(id)
        .select(WebhookRow::as_select())
        .get_result(conn)
        .await
        .optional()
}

/// The first `rows` of a webhook's deliveries on `page` (its status and `before`).
pub async fn page(
    conn: &mut AsyncPgConnection,
    webhook_id: &str,
    page: &DeliveriesPage,
    rows: i64,
) -> QueryResult<Vec<ListedDeliveryRow>> {
    let before = page.before.map_or(i64::MAX, to_i64);
    queries::delivery_page(webhook_id, page_statuses(page), before, rows)
        .select(ListedDeliveryRow::as_select())
        .load(conn)
        .await
}

/// Carries out a webhook write inside the writer's transaction.
pub async fn apply(conn: &mut AsyncPgConnection, write: &WebhookWrite) -> QueryResult<Written> {
    let count = |n: usize| Written::Count(u64::try_from(n).unwrap_or(0));
    match write {
        WebhookWrite::Create(row, receipt) => {
            if let Some(refusal) = super::ops::key_refusal(conn, receipt.as_ref()).await? {
                return Ok(Written::Refused(refusal));
            }
            // Shared with appends' lock on the log's row: an append in flight commits first and
            // its ids are read here. Read past it instead, the new webhook would start before
            // events that the delivery worker, having listed the webhooks before this one
            // committed, takes as enqueued for every webhook; they would wait for the next.
            let (last, _purged): (i64, i64) =
                queries::event_bounds().for_share().get_result(conn).await?;
            let row = WebhookRow {
                enqueued_through: last,
                ..row.clone()
            };
            diesel::insert_into(webhooks::table)
                .values(&row)
                .execute(conn)
                .await?;
            if let Some(receipt) = receipt {
                super::ops::answer_key(conn, receipt).await?;
            }
            Ok(Written::Done)
        }
        WebhookWrite::MarkDeleted(id) => diesel::update(queries::webhook(id))
            .set(webhooks::deleted.eq(true))
            .execute(conn)
            .await
            .map(count),
        WebhookWrite::DeleteDeliveries(id) => deliveries_chunk(conn, id).await.map(count),
        WebhookWrite::Delete(id) => delete(conn, id).await.map(count),
        WebhookWrite::FinishDeletion => {
            // Passing over one whose deletion another transaction holds (a request's chunk,
            // another replica's purge): its chunks take turns under the row's lock.
            let id: Option<String> = queries::unfinished_deletion()
                .for_update()
                .skip_locked()
                .get_result(conn)
                .await
                .optional()?;
            let Some(id) = id else {
                return Ok(count(0));
            };
            let mut deleted = deliveries_chunk(conn, &id).await?;
            if last_chunk(deleted) {
                deleted += delete(conn, &id).await?;
            }
            Ok(count(deleted))
        }
        WebhookWrite::Enqueue {
            webhook_id,
            now,
            limit,
        } => {
            // Locked until commit: another replica's enqueue waits, then reads the new mark.
            let webhook = queries::webhook(webhook_id)
                .select(WebhookRow::as_select())
                .for_update()
                .get_result(conn)
                .await
                .optional()?;
            let Some(webhook) = webhook else {
                return Ok(Written::Count(0));
            };
            // Up to `limit` events or a few megabytes of them (each delivery keeps a copy).
            let mut page = SizedPage::new(webhook.enqueued_through, *limit);
            while let Some((after, rows)) = page.ask() {
                let found = queries::any_events_after(after, rows)
                    .select((EventRow::as_select(), Option::<TransitionRow>::as_select()))
                    .load(conn)
                    .await?;
                page.take(found, rows);
            }
            let (rows, cut) = page.finish();
            let fetched = rows.len();
            let (deliveries, through, read) = match webhook.deliveries(rows, *now) {
                Ok(made) => made,
                Err(corrupt) => return Ok(Written::Refused(corrupt)),
            };
            // A statement per thousand: a statement per delivery was a round trip each under
            // the webhook's lock; a thousand rows stay far from the 65 535 parameters one
            // statement may carry.
            for chunk in deliveries.chunks(1000) {
                diesel::insert_into(webhook_deliveries::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            diesel::update(queries::webhook(webhook_id))
                .set(webhooks::enqueued_through.eq(through))
                .execute(conn)
                .await?;
            Ok(count(enqueued(read, fetched, cut.is_some(), *limit)))
        }
        WebhookWrite::Claim {
            now,
            lease_until,
            room,
        } => {
            // Nothing due (the usual case, five times a second): one look at the due index.
            let any_due: bool = diesel::select(diesel::dsl::exists(queries::due_deliveries(*now)))
                .get_result(conn)
                .await?;
            if !any_due {
                return Ok(Written::Due(Vec::new()));
            }
            let (busy_ids, busy): (Vec<String>, Vec<i64>) = room
                .in_flight
                .iter()
                .map(|(webhook, held)| (webhook.clone(), i64::from(*held)))
                .unzip();
            let candidates: Vec<Candidate> = diesel::sql_query(DUE_BY_WEBHOOK)
                .bind::<BigInt, _>(*now)
                .bind::<BigInt, _>(i64::from(room.limit))
                .bind::<BigInt, _>(i64::from(room.per_webhook))
                .bind::<Array<Text>, _>(busy_ids)
                .bind::<Array<BigInt>, _>(busy)
                .load(conn)
                .await?;
            let ids = room.pick(
                candidates
                    .into_iter()
                    .map(|c| (c.id, c.webhook_id, c.next_attempt_at))
                    .collect(),
            );
            if ids.is_empty() {
                return Ok(Written::Due(Vec::new()));
            }
            diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&ids)))
                .set(webhook_deliveries::lease_until.eq(lease_until))
                .execute(conn)
                .await?;
            let due: Vec<DueRow> = queries::claimed_deliveries(ids)
                .select((DeliveryRow::as_select(), (webhooks::url, webhooks::secret)))
                .load(conn)
                .await?;
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
                let mut done = diesel::update(as_claimed)
                    .set(&record.changes)
                    .execute(conn)
                    .await?;
                if done == 0 {
                    // Redelivered while in flight (or the lease is gone: then this is 0 too).
                    done = diesel::update(queries::leased_delivery(&record.id, record.lease))
                        .set(&record.counted)
                        .execute(conn)
                        .await?;
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
            if let Some(refusal) = super::ops::key_refusal(conn, receipt.as_ref()).await? {
                return Ok(Written::Refused(refusal));
            }
            // Locked first: a claim that leased it and has not committed is waited for, so
            // its lease is seen.
            let Some(lease) = queries::delivery_of(webhook_id, delivery_id)
                .select(webhook_deliveries::lease_until)
                .for_update()
                .get_result::<Option<i64>>(conn)
                .await
                .optional()?
            else {
                return Ok(count(0));
            };
            let (lease, after) = redelivery(lease, *now);
            let pending = DeliveryStatus::Pending.as_str();
            let n = diesel::update(queries::delivery_of(webhook_id, delivery_id))
                .set(queries::redelivered(pending, *now, lease, after))
                .execute(conn)
                .await?;
            if let Some(receipt) = receipt {
                super::ops::answer_key(conn, receipt).await?;
            }
            Ok(count(n))
        }
        WebhookWrite::Purge(before) => {
            let end: Option<i64> = queries::deliveries_chunk_end(*before)
                .get_result(conn)
                .await
                .optional()?;
            let through = chunk_before(end, *before);
            diesel::delete(queries::settled_deliveries_before(through))
                .execute(conn)
                .await
                .map(count)
        }
        WebhookWrite::ReleaseLeases => diesel::update(queries::leased_deliveries())
            .set(webhook_deliveries::lease_until.eq(None::<i64>))
            .execute(conn)
            .await
            .map(count),
    }
}

/// Deletes up to [`PURGE_CHUNK`](crate::storage::write::PURGE_CHUNK) of a webhook's
/// deliveries, the oldest events first, under the webhook row's lock: two deletions of one
/// webhook at once (a request's and a purge's) take turns, each reading its chunk after the
/// other's, so a chunk short of `PURGE_CHUNK` is the last one (read at once, both found one
/// chunk, and the second deleted none of it).
async fn deliveries_chunk(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<usize> {
    let held: Option<String> = queries::webhook_even_deleted(id)
        .select(webhooks::id)
        .for_update()
        .get_result(conn)
        .await
        .optional()?;
    if held.is_none() {
        return Ok(0);
    }
    let end: Option<i64> = queries::deliveries_chunk_end_of(id)
        .get_result(conn)
        .await
        .optional()?;
    diesel::delete(queries::deliveries_of_through(id, end.unwrap_or(i64::MAX)))
        .execute(conn)
        .await
}

/// Deletes a webhook, marked or not, with what is left of its deliveries.
async fn delete(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<usize> {
    let rest =
        diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(id)))
            .execute(conn)
            .await?;
    Ok(rest
        + diesel::delete(queries::webhook_even_deleted(id))
            .execute(conn)
            .await?)
}

#[async_trait::async_trait]
impl WebhookBackend for super::PgRepository {
    async fn write(&self, write: Write) -> Result<Written, RepositoryError> {
        super::PgRepository::write(self, write).await
    }

    async fn webhook_rows(&self) -> Result<Vec<WebhookRow>, RepositoryError> {
        self.run(async |conn| all(conn).await).await
    }

    async fn webhook_row(&self, id: &str) -> Result<Option<WebhookRow>, RepositoryError> {
        self.run(async |conn| one(conn, id).await).await
    }

    async fn delivery_rows(
        &self,
        webhook_id: &str,
        page: &DeliveriesPage,
        rows: i64,
    ) -> Result<Vec<ListedDeliveryRow>, RepositoryError> {
        self.run(async |conn| self::page(conn, webhook_id, page, rows).await)
            .await
    }

    async fn backlog_row(&self, now: i64) -> Result<BacklogRow, RepositoryError> {
        self.run(async |conn| {
            let pending = queries::pending_deliveries()
                .count()
                .get_result::<i64>(conn)
                .await?;
            let earliest = queries::earliest_live_due(now)
                .get_result::<Option<i64>>(conn)
                .await
                .optional()?
                .flatten();
            let unenqueued = match queries::oldest_webhook_mark()
                .get_result::<Option<i64>>(conn)
                .await?
            {
                Some(mark) => queries::first_event_time_after(mark)
                    .get_result::<i64>(conn)
                    .await
                    .optional()?,
                None => None,
            };
            Ok((pending, earliest, unenqueued))
        })
        .await
    }
}
