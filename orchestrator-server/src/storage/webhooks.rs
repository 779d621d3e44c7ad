//! Webhooks in the store: the subscriptions, and their deliveries as a durable queue.
//!
//! The event log is the queue's source. Each webhook row keeps `enqueued_through`, the last
//! event turned into its deliveries; [`WebhookRepository::enqueue_deliveries`] reads the
//! events after it and stores their deliveries and the new mark in one transaction, under the
//! webhook row's lock (PostgreSQL) or on the single writer (SQLite). Since a reader never
//! meets an event below one it has seen (see `event`), every event committed after a
//! webhook was created becomes exactly one delivery, whatever restarts or replicas do; an
//! event is acknowledged only once it is in the log, so no acknowledged change misses its
//! delivery.
//!
//! A delivery is attempted by one replica at a time: [`WebhookRepository::claim_deliveries`]
//! leases due deliveries (skipping rows another replica is claiming), and an attempt's outcome
//! is recorded only while its lease holds. A replica that dies mid-attempt leaves a lease that
//! ends, and another replica attempts the delivery again: at least once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use async_trait::async_trait;
use orchestrator_core::api::{DeliveriesPage, Delivery, Webhook};
use orchestrator_core::webhook::{DeliveryStatus, WebhookSecret};
use orchestrator_core::{Receipt, RepositoryError, Timestamp};

use super::models::{
    DueRow, ListedDeliveryRow, ReceiptRow, WebhookRow, convert, decodable_deliveries, micros,
    readable_webhooks,
};
use super::write::{Write, Written};

/// What waits to be delivered, for operators: read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Pending deliveries: due, waiting for a retry, or being attempted.
    pub pending: u64,
    /// How long the longest-due delivery that no attempt holds has been due (zero when none
    /// is): the delivery worker's lag behind what it should have attempted.
    pub oldest_due: std::time::Duration,
    /// How long ago the oldest event still to become some webhook's delivery was made (zero
    /// when none is): the enqueueing's lag behind the log, which no delivery row shows yet.
    pub oldest_unenqueued: std::time::Duration,
}

/// A delivery a replica has claimed: what to POST, where, and with which key. `Debug` leaves
/// the secret out.
#[derive(Clone)]
pub struct DueDelivery {
    /// The delivery id: the `webhook-id` header.
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// Where to POST.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The CloudEvent JSON.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Attempts made before the retry schedule last started: 0, or set by its last
    /// redelivery (past `attempts` by one when an attempt was in flight then). Where the next
    /// attempt stands in the schedule is `ScheduledAttempt::after(attempts, schedule_from)`.
    pub schedule_from: u32,
    /// How many times it was redelivered, when claimed.
    pub redeliveries: u32,
    /// The claim's lease (Unix microseconds); the outcome is recorded only while it holds.
    pub lease: i64,
}

impl From<DueRow> for DueDelivery {
    fn from((row, (url, secret)): DueRow) -> Self {
        DueDelivery {
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            schedule_from: u32::try_from(row.schedule_from).unwrap_or(0),
            redeliveries: u32::try_from(row.redeliveries).unwrap_or(0),
            lease: row.lease_until.unwrap_or_default(),
            id: row.id,
            webhook_id: row.webhook_id,
            url,
            secret,
            payload: row.payload,
        }
    }
}

/// The outcome of one attempt, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The delivery.
    pub id: String,
    /// The lease of the claim that made the attempt.
    pub lease: i64,
    /// The delivery's redeliveries when it was claimed: a redelivery while the attempt was in
    /// flight moved them, and then the attempt is counted but the delivery stays due.
    pub redeliveries: u32,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// The attempts made before the retry schedule last started, as the attempt judged it
    /// (see `ScheduledAttempt`).
    pub schedule_from: u32,
    /// Delivered, failed for good, or pending again.
    pub status: DeliveryStatus,
    /// The HTTP status, if the target answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    /// When to attempt again (pending only).
    pub next_attempt_at: Option<Timestamp>,
    /// When a 2xx arrived (delivered only).
    pub delivered_at: Option<Timestamp>,
}

/// A due delivery's place in a claim: when it became due, and its id.
type Due = (Option<i64>, String);

impl fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DueDelivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url)
            .field("secret", &"…")
            .field("attempts", &self.attempts)
            .field("schedule_from", &self.schedule_from)
            .field("redeliveries", &self.redeliveries)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What one claim may take: how many deliveries in all, and how many of one webhook's may be
/// in flight at once on this replica, so that a receiver that hangs or is slow holds only its
/// share of the attempts and the other webhooks' deliveries go on. The store reads each
/// webhook's due deliveries within its room, so one webhook's backlog never hides another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRoom {
    /// Most deliveries claimed.
    pub limit: u32,
    /// Most attempts of one webhook in flight at once.
    pub per_webhook: u32,
    /// The attempts in flight, by webhook id.
    pub in_flight: HashMap<String, u32>,
}

impl ClaimRoom {
    /// Up to `limit` deliveries, whichever webhooks they are for.
    pub fn up_to(limit: u32) -> Self {
        ClaimRoom {
            limit,
            per_webhook: limit,
            in_flight: HashMap::new(),
        }
    }

    /// The webhooks whose share is taken: their deliveries are not claimed now.
    pub(crate) fn full(&self) -> Vec<String> {
        self.in_flight
            .iter()
            .filter(|(_, n)| **n >= self.per_webhook)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many of `webhook`'s deliveries this claim may take.
    pub(crate) fn room_of(&self, webhook: &str) -> i64 {
        let busy = self.in_flight.get(webhook).copied().unwrap_or(0);
        i64::from(self.per_webhook.saturating_sub(busy).min(self.limit))
    }

    /// Of `candidates` (delivery id, webhook id, when it became due; each webhook's within its
    /// room), the ids this claim takes, up to its limit, one at a time: each to the webhook
    /// that would then hold the fewest attempts (those in flight and those taken so far), of
    /// those the one whose next delivery has waited longest, and that webhook's longest due.
    /// Free slots therefore go first to the webhooks holding the fewest: receivers that hang
    /// keep the slots they hold until their attempts time out, but take no new ones while a
    /// webhook holding fewer has deliveries due, so two that hang cannot take every slot
    /// from a third (they may fill the slots a third leaves idle, until their attempts end).
    pub(crate) fn pick(&self, mut candidates: Vec<(String, String, Option<i64>)>) -> Vec<String> {
        candidates.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
        // Per webhook: the attempts it holds, and its due deliveries, longest due first.
        let mut queues: BTreeMap<String, (u32, VecDeque<Due>)> = BTreeMap::new();
        for (id, webhook, due) in candidates {
            let held = self.in_flight.get(&webhook).copied().unwrap_or(0);
            queues
                .entry(webhook)
                .or_insert_with(|| (held, VecDeque::new()))
                .1
                .push_back((due, id));
        }
        let mut taken = Vec::new();
        while taken.len() < self.limit as usize {
            let next = queues
                .values_mut()
                .filter_map(|(held, due)| Some((due.front()?.0, held, due)))
                .min_by_key(|(waited, held, _)| (**held, *waited));
            let Some((_, held, due)) = next else {
                break;
            };
            if let Some((_, id)) = due.pop_front() {
                *held += 1;
                taken.push(id);
            }
        }
        taken
    }
}

/// Webhooks and their deliveries: what a durable store keeps for the delivery worker and the
/// `/webhooks` API.
#[async_trait]
pub trait WebhookRepository: Send + Sync {
    /// Stores a new webhook; it takes the events committed from now on. `receipt`, the answer
    /// to a request's idempotency key, is kept in the same write.
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        secret: &WebhookSecret,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError>;

    /// Every webhook, oldest first; one whose row does not decode is left out (and logged).
    async fn webhooks(&self) -> Result<Vec<Webhook>, RepositoryError>;

    /// One webhook.
    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, RepositoryError>;

    /// Deletes a webhook and its deliveries; false if there was none. The webhook is gone for
    /// every other call from the first step on: if a later one fails, the purge
    /// ([`WebhookRepository::purge_deliveries`]) deletes what is left.
    async fn delete_webhook(&self, id: &str) -> Result<bool, RepositoryError>;

    /// Turns up to `limit` events after the webhook's mark (fewer when they hold more than a
    /// few megabytes) into its deliveries, due at `now`; answers how many events were read
    /// past, or `limit` when a batch cut at its bytes has more after it: fewer than `limit`
    /// means it is up to date, or the next event is of a type this version does not know, left
    /// a while to a newer replica.
    async fn enqueue_deliveries(
        &self,
        webhook_id: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<u64, RepositoryError>;

    /// Leases deliveries due at `now` that no other claim holds, until `lease_until`: as many
    /// as `room` has, the longest due first.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
    ) -> Result<Vec<DueDelivery>, RepositoryError>;

    /// Stores the outcomes of attempts, in one write; each only if its claim still holds the
    /// delivery (not if the lease ended and another attempt took over). An attempt whose
    /// delivery was redelivered while it was in flight is counted (attempts, status code,
    /// error) and the delivery stays pending and due, for the redelivery. Answers how many
    /// were stored.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<u64, RepositoryError>;

    /// A webhook's deliveries, newest event first, as `page` asks: up to one more than its
    /// limit, so the caller knows whether another page follows. A delivery that does not
    /// decode (an event type a newer version enqueued) is left out and logged.
    async fn deliveries(
        &self,
        webhook_id: &str,
        page: &DeliveriesPage,
    ) -> Result<Vec<Delivery>, RepositoryError>;

    /// Makes a delivery pending and due at `now`, its attempts counting on and its retry
    /// schedule starting again; false if the webhook has no such delivery. A delivery with an
    /// attempt in flight keeps that attempt's lease: it is attempted again once that attempt
    /// ends (never twice at once). `receipt` (the answer to the request, if it came with an
    /// idempotency key) is stored in the same transaction, if the delivery is found (and only
    /// while the receipt's claim holds its key: else [`RepositoryError::KeyTakenOver`]).
    async fn redeliver(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: Timestamp,
        receipt: Option<&Receipt>,
    ) -> Result<bool, RepositoryError>;

    /// Finishes the deletions of webhooks that were cut short, and forgets delivered and failed
    /// deliveries made before `before`; returns how many rows went. A large backlog may take
    /// several calls (up to a million rows a call for each, 10 000 per transaction, oldest
    /// first); a failure of the first still lets the second run.
    async fn purge_deliveries(&self, before: Timestamp) -> Result<u64, RepositoryError>;

    /// What waits to be delivered at `now` (two reads of the pending deliveries' index).
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, RepositoryError>;

    /// Lets go of every delivery's lease, so that what a stopped server was attempting is
    /// attempted again at once rather than when its leases end; answers how many there were.
    /// Only for a server that knows no other attempts deliveries: a SQLite database's one
    /// server, at start-up.
    async fn release_leases(&self) -> Result<u64, RepositoryError>;
}

/// Every webhook write, for the back ends' `apply`.
#[derive(Debug)]
pub(crate) enum WebhookWrite {
    /// A new webhook, its mark set to the log's last id, and the answer kept for the request's
    /// idempotency key, if it has one.
    Create(WebhookRow, Option<ReceiptRow>),
    /// Marks a webhook `deleted`, the first step of its deletion (answers `Count`: whether it
    /// was there and not being deleted already).
    MarkDeleted(String),
    /// Deletes up to [`PURGE_CHUNK`](super::write::PURGE_CHUNK) of a webhook's deliveries
    /// (answers `Count`): a busy webhook keeps millions, too many for one transaction.
    DeleteDeliveries(String),
    /// Deletes a webhook (marked first, by the deletion) and what is left of its deliveries
    /// (answers `Count`).
    Delete(String),
    /// One chunk of a deletion that was cut short: up to a chunk of a marked webhook's
    /// deliveries, and its row once they are gone (answers `Count`: the rows deleted).
    FinishDeletion,
    /// See [`WebhookRepository::enqueue_deliveries`] (answers `Count`).
    Enqueue {
        /// The webhook.
        webhook_id: String,
        /// Unix microseconds.
        now: i64,
        /// Most events read.
        limit: i64,
    },
    /// See [`WebhookRepository::claim_deliveries`] (answers `Due`).
    Claim {
        /// Unix microseconds.
        now: i64,
        /// Unix microseconds.
        lease_until: i64,
        /// What the claim may take.
        room: ClaimRoom,
    },
    /// See [`WebhookRepository::record_attempts`] (answers `Count`).
    Record(Vec<RecordRow>),
    /// See [`WebhookRepository::redeliver`] (answers `Count`).
    Redeliver {
        /// The webhook.
        webhook_id: String,
        /// The delivery.
        delivery_id: String,
        /// Unix microseconds.
        now: i64,
        /// The answer kept for the request's idempotency key, if it has one.
        receipt: Option<ReceiptRow>,
    },
    /// One chunk of [`WebhookRepository::purge_deliveries`], the oldest, as `Write::PurgeKeys`
    /// deletes keys (answers `Count`).
    Purge(i64),
    /// See [`WebhookRepository::release_leases`] (answers `Count`).
    ReleaseLeases,
}

/// What a redelivery at `now` sets, from the delivery's lease: the lease to keep and how many
/// attempts past those made the retry schedule starts. An attempt in flight keeps its lease
/// (the delivery is attempted again once that attempt ends, never twice at once) and the
/// schedule starts after it; otherwise the lease is cleared and the schedule starts at the
/// next attempt.
pub(crate) fn redelivery(lease: Option<i64>, now: i64) -> (Option<i64>, i32) {
    match lease {
        Some(lease) if lease >= now => (Some(lease), 1),
        _ => (None, 0),
    }
}

/// An attempt's outcome in columns.
#[derive(Debug, Clone, diesel::AsChangeset)]
#[diesel(table_name = super::schema::webhook_deliveries)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct RecordChanges {
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub schedule_from: i32,
    /// Set by a delivering attempt; a failed one (after a redelivery) leaves the last success.
    #[diesel(treat_none_as_null = false)]
    pub delivered_at: Option<i64>,
    pub lease_until: Option<i64>,
}

/// An attempt's outcome when its delivery was redelivered while it was in flight: the
/// attempt counted, the delivery left pending and due for the redelivery.
#[derive(Debug, Clone, diesel::AsChangeset)]
#[diesel(table_name = super::schema::webhook_deliveries)]
#[diesel(treat_none_as_null = true)]
pub(crate) struct CountedChanges {
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// Set by a delivering attempt, as in [`RecordChanges`].
    #[diesel(treat_none_as_null = false)]
    pub delivered_at: Option<i64>,
    pub lease_until: Option<i64>,
}

/// [`AttemptRecord`] as the store writes it: which row, under which lease, what changes.
#[derive(Debug, Clone)]
pub(crate) struct RecordRow {
    /// The delivery.
    pub id: String,
    /// The claim's lease.
    pub lease: i64,
    /// The delivery's redeliveries when claimed.
    pub redeliveries: i32,
    /// The new columns (the lease released), if the delivery was not redelivered meanwhile.
    pub changes: RecordChanges,
    /// The new columns if it was.
    pub counted: CountedChanges,
}

impl From<&AttemptRecord> for RecordRow {
    fn from(record: &AttemptRecord) -> Self {
        let attempts = i32::try_from(record.attempts).unwrap_or(i32::MAX);
        let last_status_code = record.status_code.map(i32::from);
        RecordRow {
            id: record.id.clone(),
            lease: record.lease,
            redeliveries: i32::try_from(record.redeliveries).unwrap_or(i32::MAX),
            changes: RecordChanges {
                status: record.status.as_str().to_owned(),
                attempts,
                last_status_code,
                last_error: record.error.clone(),
                next_attempt_at: record.next_attempt_at.map(micros),
                schedule_from: i32::try_from(record.schedule_from).unwrap_or(i32::MAX),
                delivered_at: record.delivered_at.map(micros),
                lease_until: None,
            },
            counted: CountedChanges {
                attempts,
                last_status_code,
                last_error: record.error.clone(),
                delivered_at: record.delivered_at.map(micros),
                lease_until: None,
            },
        }
    }
}

/// The statuses a page of deliveries may show.
pub(crate) fn page_statuses(page: &DeliveriesPage) -> Vec<&'static str> {
    match page.status {
        Some(status) => vec![status.as_str()],
        None => DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect(),
    }
}

/// What [`WebhookBackend::backlog_row`] reads: pending deliveries, the earliest due time of
/// those no attempt holds, and when the oldest event no webhook has enqueued yet was made
/// (both Unix microseconds).
pub(crate) type BacklogRow = (i64, Option<i64>, Option<i64>);

/// What each back end gives the webhook store: its way of writing, and the four reads. The
/// [`WebhookRepository`] methods are written once, over it.
#[async_trait]
pub(crate) trait WebhookBackend: Send + Sync {
    /// Carries out a write (SQLite: on the writer thread; PostgreSQL: in a transaction).
    async fn write(&self, write: Write) -> Result<Written, RepositoryError>;
    /// Every webhook row, oldest first.
    async fn webhook_rows(&self) -> Result<Vec<WebhookRow>, RepositoryError>;
    /// One webhook row.
    async fn webhook_row(&self, id: &str) -> Result<Option<WebhookRow>, RepositoryError>;
    /// The first `rows` of a webhook's delivery rows on `page` (its status and `before`).
    async fn delivery_rows(
        &self,
        webhook_id: &str,
        page: &DeliveriesPage,
        rows: i64,
    ) -> Result<Vec<ListedDeliveryRow>, RepositoryError>;
    /// How many deliveries are pending, the earliest `next_attempt_at` (Unix microseconds) of
    /// those due at `now` that no attempt holds, and when the oldest event after the lowest
    /// webhook mark was made.
    async fn backlog_row(&self, now: i64) -> Result<BacklogRow, RepositoryError>;
}

#[async_trait]
impl<B: WebhookBackend> WebhookRepository for B {
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        secret: &WebhookSecret,
        receipt: Option<&Receipt>,
    ) -> Result<(), RepositoryError> {
        let write = WebhookWrite::Create(
            WebhookRow::new(webhook, secret),
            receipt.map(ReceiptRow::from),
        );
        self.write(Write::Webhook(write)).await.map(|_| ())
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, RepositoryError> {
        Ok(readable_webhooks(self.webhook_rows().await?))
    }

    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, RepositoryError> {
        let row = self.webhook_row(id).await?;
        Ok(convert(row.into_iter().collect())?.pop())
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, RepositoryError> {
        // Marked first, in a transaction of its own: from then on it is gone for every read,
        // enqueue and claim, so a deletion cut short between the chunks below leaves no live
        // webhook missing part of its deliveries; the purge finishes it.
        let mark = WebhookWrite::MarkDeleted(id.to_owned());
        if self.write(Write::Webhook(mark)).await?.count() == 0 {
            return Ok(false);
        }
        // Its deliveries, a chunk per transaction: none outlasts PostgreSQL's statement
        // timeout, and SQLite's writer serves the other writes between them.
        let chunk = || Write::Webhook(WebhookWrite::DeleteDeliveries(id.to_owned()));
        super::write::delete_in_chunks(u32::MAX, chunk, |write| self.write(write)).await?;
        let write = WebhookWrite::Delete(id.to_owned());
        self.write(Write::Webhook(write)).await?;
        Ok(true)
    }

    async fn enqueue_deliveries(
        &self,
        webhook_id: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<u64, RepositoryError> {
        let write = WebhookWrite::Enqueue {
            webhook_id: webhook_id.to_owned(),
            now: micros(now),
            limit: i64::from(limit),
        };
        Ok(self.write(Write::Webhook(write)).await?.count())
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
    ) -> Result<Vec<DueDelivery>, RepositoryError> {
        let write = WebhookWrite::Claim {
            now: micros(now),
            lease_until: micros(lease_until),
            room: room.clone(),
        };
        self.write(Write::Webhook(write)).await?.into_due()
    }

    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<u64, RepositoryError> {
        if records.is_empty() {
            return Ok(0);
        }
        let write = WebhookWrite::Record(records.iter().map(RecordRow::from).collect());
        Ok(self.write(Write::Webhook(write)).await?.count())
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        page: &DeliveriesPage,
    ) -> Result<Vec<Delivery>, RepositoryError> {
        decodable_deliveries(page, |rows| self.delivery_rows(webhook_id, page, rows)).await
    }

    async fn redeliver(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: Timestamp,
        receipt: Option<&Receipt>,
    ) -> Result<bool, RepositoryError> {
        let write = WebhookWrite::Redeliver {
            webhook_id: webhook_id.to_owned(),
            delivery_id: delivery_id.to_owned(),
            now: micros(now),
            receipt: receipt.map(ReceiptRow::from),
        };
        Ok(self.write(Write::Webhook(write)).await?.count() > 0)
    }

    async fn release_leases(&self) -> Result<u64, RepositoryError> {
        let write = Write::Webhook(WebhookWrite::ReleaseLeases);
        Ok(self.write(write).await?.count())
    }

    async fn purge_deliveries(&self, before: Timestamp) -> Result<u64, RepositoryError> {
        let write = |write| self.write(write);
        let unfinished = || Write::Webhook(WebhookWrite::FinishDeletion);
        let finished = super::write::purge_in_chunks(unfinished, write).await;
        // Retention goes on whatever became of the deletions (the error is still answered).
        let purge = || Write::Webhook(WebhookWrite::Purge(micros(before)));
        let purged = super::write::purge_in_chunks(purge, write).await;
        Ok(finished? + purged?)
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog, RepositoryError> {
        let now = micros(now);
        let (pending, earliest, unenqueued) = self.backlog_row(now).await?;
        let since = |at: Option<i64>| {
            let late = at.map_or(0, |at| now.saturating_sub(at).max(0));
            std::time::Duration::from_micros(u64::try_from(late).unwrap_or(0))
        };
        Ok(Backlog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_due: since(earliest),
            oldest_unenqueued: since(unenqueued),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_each_webhooks_longest_due_in_turn() {
        let candidate =
            |id: &str, webhook: &str, due: i64| (id.to_owned(), webhook.to_owned(), Some(due));
        let candidates = vec![
            candidate("c2", "c", 6),
            candidate("a1", "a", 1),
            candidate("b1", "b", 4),
            candidate("a3", "a", 3),
            candidate("c1", "c", 5),
            candidate("a2", "a", 2),
        ];
        let room = ClaimRoom::up_to(4);
        // First of each (a's waited longest), then the second of each.
        assert_eq!(room.pick(candidates.clone()), ["a1", "b1", "c1", "a2"]);
        assert_eq!(ClaimRoom::up_to(10).pick(candidates).len(), 6);
    }

    /// `n` due deliveries of `webhook`, `{webhook}{i}`, the first longest due.
    fn due(webhook: &str, n: usize) -> impl Iterator<Item = (String, String, Option<i64>)> + '_ {
        (0..n).map(move |i| {
            (
                format!("{webhook}{i}"),
                webhook.to_owned(),
                i64::try_from(i).ok(),
            )
        })
    }

    #[test]
    fn free_slots_go_first_to_the_webhooks_holding_fewest() {
        // a and b hold 21 attempts each, c none: c's deliveries take the free slots until c
        // holds as many, though a's and b's waited longer; then the slots go in turn, the
        // longest due first.
        let room = ClaimRoom {
            limit: 24,
            per_webhook: 48,
            in_flight: HashMap::from([("a".to_owned(), 21), ("b".to_owned(), 21)]),
        };
        let candidates: Vec<_> = due("a", 27)
            .chain(due("b", 27))
            .chain(due("c", 40))
            .collect();
        let picked = room.pick(candidates);
        assert!(
            picked[..21].iter().all(|id| id.starts_with('c')),
            "{picked:?}"
        );
        assert_eq!(picked[21..], ["a0", "b0", "c21"]);
        // With fewer of c's due than the slots, the rest go to the others.
        let candidates: Vec<_> = due("a", 27)
            .chain(due("b", 27))
            .chain(due("c", 20))
            .collect();
        assert_eq!(room.pick(candidates)[20..], ["a0", "b0", "a1", "b1"]);
    }

    #[test]
    fn two_webhooks_that_hang_never_take_every_slot_from_a_third() {
        // Claims in a row, as the worker makes them with 64 slots: a's and b's attempts never
        // end (their receivers hang), c's end before the next claim; all three have a backlog.
        // The store reads each webhook's due deliveries within its room, as `claim_deliveries`.
        let mut held: HashMap<String, u32> = HashMap::new();
        for claim in 0..20 {
            held.remove("c");
            let room = ClaimRoom {
                limit: 64 - held.values().sum::<u32>(),
                per_webhook: 48,
                in_flight: held.clone(),
            };
            let room_of = |w| usize::try_from(room.room_of(w)).unwrap_or(0);
            let candidates: Vec<_> = due("a", room_of("a"))
                .chain(due("b", room_of("b")))
                .chain(due("c", room_of("c")))
                .collect();
            for id in room.pick(candidates) {
                *held.entry(id[..1].to_owned()).or_default() += 1;
            }
            assert!(
                held.get("c").copied().unwrap_or(0) >= 21,
                "claim {claim}: {held:?}"
            );
        }
    }

    #[test]
    fn a_webhook_at_its_share_gets_no_room() {
        let room = ClaimRoom {
            limit: 10,
            per_webhook: 3,
            in_flight: HashMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]),
        };
        assert_eq!(room.full(), ["a"]);
        assert_eq!(
            (room.room_of("a"), room.room_of("b"), room.room_of("c")),
            (0, 2, 3)
        );
    }
}
